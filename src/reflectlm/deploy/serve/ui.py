"""GET /: one small page where a person types a text, sees the prediction and sends a correction.
No external resources (it must work offline and behind a strict content security policy); the
key is kept in sessionStorage only; every value is set with textContent, never as HTML."""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ReflectLM</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:720px;margin:2em auto;padding:0 1em;color:#222}
textarea,input,select,button{font:inherit;padding:.4em;margin:.2em 0}
textarea{width:100%;height:6em;box-sizing:border-box}
#result{margin:1em 0;padding:.8em;background:#f4f6f8;border-radius:6px;min-height:1.5em}
.bar{display:inline-block;height:.7em;background:#4a7bd0;margin-left:.5em}
#status{color:#555}
</style></head>
<body>
<h1>ReflectLM</h1>
<p><label>API key <input id="key" type="password" size="40" autocomplete="off"></label></p>
<p><textarea id="text" placeholder="Type a text to label"></textarea></p>
<p><button id="predict">Predict</button></p>
<div id="result"></div>
<p id="correct" hidden><label>Correct label <select id="label"></select></label>
<button id="send">Send correction</button></p>
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
function loadInfo(){return info?Promise.resolve(info):call('GET','/v1/model').then(function(j){info=j;
 var sel=document.getElementById('label');sel.textContent='';
 j.labels.forEach(function(l){var o=document.createElement('option');o.value=l;o.textContent=l;sel.appendChild(o);});
 return j;});}
function show(p){var box=document.getElementById('result');box.textContent='';
 if(p.entities){var line=document.createElement('div');
  line.textContent=p.entities.length?p.entities.map(function(e){return e.text+' ['+e.type+' '+e.score.toFixed(2)+']';}).join(', '):'(no entities)';
  box.appendChild(line);return;}
 var head=document.createElement('div');head.id='predicted';head.textContent=p.label+' ('+(100*p.confidence).toFixed(1)+'%)';
 box.appendChild(head);
 Object.keys(p.probabilities).sort(function(a,b){return p.probabilities[b]-p.probabilities[a];}).slice(0,5)
  .forEach(function(l){var row=document.createElement('div');row.textContent=l;var bar=document.createElement('span');
   bar.className='bar';bar.style.width=(200*p.probabilities[l]).toFixed(0)+'px';row.appendChild(bar);box.appendChild(row);});}
document.getElementById('predict').addEventListener('click',function(){
 var text=document.getElementById('text').value;status('');
 loadInfo().then(function(){return call('POST','/v1/predict',{texts:[text]});}).then(function(j){
  last=j.predictions[0];show(last);
  document.getElementById('correct').hidden=!!last.entities;
  if(!last.entities){document.getElementById('label').value=last.label;}
  status('prediction '+last.id);}).catch(function(e){status('error: '+e.message);});});
document.getElementById('send').addEventListener('click',function(){
 if(!last){return;}
 call('POST','/v1/feedback',{prediction_id:last.id,label:document.getElementById('label').value})
  .then(function(j){status('correction stored (#'+j.feedback_id+')');}).catch(function(e){status('error: '+e.message);});});
})();
</script>
</body></html>
"""
