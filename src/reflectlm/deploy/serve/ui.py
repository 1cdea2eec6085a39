"""GET /: one small page where a person types an input, sees the prediction and sends a correction.
What it asks for follows the served task (GET /v1/model's input_fields): a text, or a question and
its context, whose answer it highlights in the context. For a model that generates text
(GET /v1/model's generates), a Generate button streams the output into the page as the model
decodes it (POST /v1/generate with stream: fetch and a ReadableStream reading the server-sent
events). No external resources (it must work offline and behind a strict content security policy);
the key is kept in sessionStorage only; every value is set with textContent, never as HTML."""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ReflectLM</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:720px;margin:2em auto;padding:0 1em;color:#222}
textarea,input,select,button{font:inherit;padding:.4em;margin:.2em 0}
textarea{width:100%;height:6em;box-sizing:border-box}
#context{height:10em}
#result{margin:1em 0;padding:.8em;background:#f4f6f8;border-radius:6px;min-height:1.5em;white-space:pre-wrap}
mark{background:#ffe08a;padding:0 .1em}
.bar{display:inline-block;height:.7em;background:#4a7bd0;margin-left:.5em}
#status{color:#555}
</style></head>
<body>
<h1>ReflectLM</h1>
<p><label>API key <input id="key" type="password" size="40" autocomplete="off"></label></p>
<p><textarea id="text" placeholder="Type a text to label"></textarea></p>
<p id="context-box" hidden><textarea id="context" placeholder="The context the answer is in"></textarea></p>
<p><button id="predict">Predict</button> <button id="generate" hidden>Generate (streamed)</button></p>
<div id="result"></div>
<p id="correct" hidden><label>Correct label <select id="label"></select></label>
<button id="send">Send correction</button></p>
<p id="correct-answer" hidden><label><span id="answer-what">Correct answer</span> <input id="answer" size="40"></label>
<button id="send-answer">Send correction</button></p>
<p id="status" role="status"></p>
<script>
(function(){
var keyBox=document.getElementById('key'), last=null, info=null;
keyBox.value=sessionStorage.getItem('reflectlm-key')||'';
function headers(){sessionStorage.setItem('reflectlm-key',keyBox.value);
 return {'Content-Type':'application/json','Authorization':'Bearer '+keyBox.value};}
function status(msg){document.getElementById('status').textContent=msg;}
function call(method,path,body){
 return fetch(path,{method:method,headers:headers(),body:body?JSON.stringify(body):undefined})
  .then(function(r){return r.json().then(function(j){if(!r.ok){throw new Error(j.error?j.error.message:r.status);}return j;});});}
function hasContext(){return info&&info.input_fields.indexOf('context')>=0;}
function loadInfo(){return info?Promise.resolve(info):call('GET','/v1/model').then(function(j){info=j;
 var sel=document.getElementById('label');sel.textContent='';
 j.labels.forEach(function(l){var o=document.createElement('option');o.value=l;o.textContent=l;sel.appendChild(o);});
 if(hasContext()){document.getElementById('context-box').hidden=false;
  document.getElementById('text').placeholder='Type a question about the context below';}
 if(j.generates){document.getElementById('generate').hidden=false;
  document.getElementById('answer-what').textContent='Correct output';
  document.getElementById('text').placeholder='Type a text for the model to answer';}
 return j;});}
function showAnswer(p,context){var box=document.getElementById('result');box.textContent='';
 var head=document.createElement('div');head.id='predicted';
 head.textContent=(p.answer||'(no answer)')+' ('+(100*p.score).toFixed(1)+'%)';box.appendChild(head);
 var ctx=document.createElement('div');ctx.appendChild(document.createTextNode(context.slice(0,p.start)));
 var mark=document.createElement('mark');mark.id='highlight';mark.textContent=context.slice(p.start,p.end);ctx.appendChild(mark);
 ctx.appendChild(document.createTextNode(context.slice(p.end)));box.appendChild(ctx);}
function show(p,context){var box=document.getElementById('result');box.textContent='';
 if(p.answer!==undefined){showAnswer(p,context);return;}
 if(p.output!==undefined){var out=document.createElement('div');out.id='generated';out.textContent=p.output;
  box.appendChild(out);return;}
 if(p.entities){var line=document.createElement('div');
  line.textContent=p.entities.length?p.entities.map(function(e){return e.text+' ['+e.type+' '+e.score.toFixed(2)+']';}).join(', '):'(no entities)';
  box.appendChild(line);return;}
 var head=document.createElement('div');head.id='predicted';
 head.textContent=p.out_of_scope?'out of scope'+(p.label?' \u2192 '+p.label:'')+' (score '+(100*p.out_of_scope_score).toFixed(1)+'%)'
  :p.label+' ('+(100*p.confidence).toFixed(1)+'%)';
 box.appendChild(head);
 Object.keys(p.probabilities).sort(function(a,b){return p.probabilities[b]-p.probabilities[a];}).slice(0,5)
  .forEach(function(l){var row=document.createElement('div');row.textContent=l;var bar=document.createElement('span');
   bar.className='bar';bar.style.width=(200*p.probabilities[l]).toFixed(0)+'px';row.appendChild(bar);box.appendChild(row);});}
document.getElementById('predict').addEventListener('click',function(){
 var text=document.getElementById('text').value, context=document.getElementById('context').value;status('');
 loadInfo().then(function(){
  var body=hasContext()?{inputs:[{question:text,context:context}]}:{texts:[text]};
  return call('POST','/v1/predict',body);}).then(function(j){
  last=j.predictions[0];show(last,context);offerCorrection(last);
  status('prediction '+last.id);}).catch(function(e){status('error: '+e.message);});});
function offerCorrection(p){var free=p.answer!==undefined?p.answer:p.output;
 document.getElementById('correct').hidden=p.id===undefined||!!p.entities||free!==undefined;
 document.getElementById('correct-answer').hidden=p.id===undefined||free===undefined;
 if(p.label!==undefined&&p.label!==null){document.getElementById('label').value=p.label;}
 if(free!==undefined){document.getElementById('answer').value=free;}}
function readEvents(r,onEvent){var reader=r.body.getReader(),dec=new TextDecoder(),buf='';
 function pump(){return reader.read().then(function(res){
  buf+=dec.decode(res.value||new Uint8Array(0),{stream:!res.done});
  var blocks=buf.split('\\n\\n');buf=res.done?'':blocks.pop();
  blocks.forEach(function(b){var kind='message',data='';
   b.split('\\n').forEach(function(l){if(l.indexOf('event:')===0){kind=l.slice(6).trim();}
    else if(l.indexOf('data:')===0){data+=l.slice(5);}});
   if(data){onEvent(kind,JSON.parse(data));}});
  return res.done?null:pump();});}
 return pump();}
document.getElementById('generate').addEventListener('click',function(){
 var text=document.getElementById('text').value, h=headers();h['Accept']='text/event-stream';
 var box=document.getElementById('result');box.textContent='';last=null;offerCorrection({});
 var out=document.createElement('div');out.id='generated';box.appendChild(out);status('generating\u2026');
 fetch('/v1/generate',{method:'POST',headers:h,body:JSON.stringify({text:text,stream:true})}).then(function(r){
  if(!r.ok){return r.json().then(function(j){throw new Error(j.error?j.error.message:r.status);});}
  return readEvents(r,function(kind,j){
   if(kind==='error'){throw new Error(j.error.message);}
   if(j.token!==undefined){out.textContent+=j.token;}
   if(j.done){last=j;out.textContent=j.output;offerCorrection(j);
    status('prediction '+j.id+' ('+j.tokens+' tokens)');}});
 }).catch(function(e){status('error: '+e.message);});});
function send(body){call('POST','/v1/feedback',body)
  .then(function(j){status('correction stored (#'+j.feedback_id+')');}).catch(function(e){status('error: '+e.message);});}
document.getElementById('send').addEventListener('click',function(){
 if(last){send({prediction_id:last.id,label:document.getElementById('label').value});}});
document.getElementById('send-answer').addEventListener('click',function(){
 if(!last){return;}var body={prediction_id:last.id};
 body[last.output!==undefined?'output':'answer']=document.getElementById('answer').value;send(body);});
keyBox.addEventListener('change',function(){loadInfo().catch(function(){});});
loadInfo().catch(function(){});  // shows what this model offers (Generate) once the key is accepted
})();
</script>
</body></html>
"""
