"""reflectlm.config: TOML loading, defaults, dotted overrides, ${VAR} expansion, error messages, dump."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from reflectlm.config import Config, ConfigError, TrainConfig, apply_overrides, dump_toml, load_config, validate_tree


def write_toml(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def base_tree(task: str = "classification") -> dict:
    return {"data": {"task": task, "train": "/abs/train.csv"}}


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(*args, **kwargs)
    return str(e.value)


# --------------------------------------------------------------------------- loading and defaults


def test_load_toml_file_and_defaults(tmp_path):
    path = write_toml(tmp_path, """
[data]
train = "/data/train.csv"
text_column = "sentence"

[model]
name = "minilm"

[train]
epochs = 5
lr = 2e-5
""")
    cfg = load_config(path)
    assert cfg.data.train == "/data/train.csv"
    assert cfg.data.text_column == "sentence"
    assert cfg.train.epochs == 5
    assert cfg.train.lr == pytest.approx(2e-5)
    # Everything not given takes its default.
    assert cfg.data.task == "classification"
    assert cfg.data.label_column == "label"
    assert cfg.data.selection is None and cfg.data.test is None
    assert cfg.data.max_length == 128
    assert cfg.model.kind == "transformer"
    assert cfg.model.lstm.hidden_size == 128
    assert cfg.train.batch_size == 32
    assert cfg.train.optimizer == "adamw"
    assert cfg.train.max_grad_norm == pytest.approx(1.0)
    assert cfg.train.precision == "auto"
    assert cfg.run.output_dir == "runs"
    assert cfg.run.quiet is False


def test_relative_data_path_resolves_against_config_dir(tmp_path, monkeypatch):
    conf = tmp_path / "configs"
    conf.mkdir()
    (conf / "train.csv").write_text("text,label\n", encoding="utf-8")
    path = write_toml(conf, '[data]\ntrain = "train.csv"\n')
    monkeypatch.chdir(tmp_path)  # train.csv is not in the current directory, only next to the config
    assert Path(load_config(path).data.train) == conf / "train.csv"


def test_existing_data_paths_are_stored_absolute(tmp_path, monkeypatch):
    # A run directory's config.toml must find its data from any directory (diagnose, report,
    # resume): a relative path that exists is made absolute when the config is loaded.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("text,label\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(tree={"data": {"train": "data/train.csv", "test": "data/missing.csv"}})
    assert Path(cfg.data.train).is_absolute() and Path(cfg.data.train) == (tmp_path / "data" / "train.csv").resolve()
    assert cfg.data.test == "data/missing.csv"  # not found anywhere: kept as written, the loader reports it
    saved = tmp_path / "run.toml"
    saved.write_text(dump_toml(cfg), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert Path(load_config(saved).data.train).is_file()


# --------------------------------------------------------------------------- overrides


def test_dotted_overrides_parse_toml_values():
    cfg = load_config(tree=base_tree(), overrides=[
        "train.lr=3e-5",
        "train.epochs=7",
        "train.group_by_length=false",
        "run.quiet=true",
        "run.name=my-run",  # a bare word falls back to a string
        'model.name="some dir"',  # a quoted TOML string
        "model.lstm.hidden_size=64",  # nested section
        "train.max_grad_norm=0.5",
    ])
    assert cfg.train.lr == pytest.approx(3e-5)
    assert cfg.train.epochs == 7
    assert cfg.train.group_by_length is False
    assert cfg.run.quiet is True
    assert cfg.run.name == "my-run"
    assert cfg.model.name == "some dir"
    assert cfg.model.lstm.hidden_size == 64
    assert cfg.model.lstm.embedding_dim == 128  # siblings keep their defaults
    assert cfg.train.max_grad_norm == pytest.approx(0.5)


def test_override_wins_over_file(tmp_path):
    path = write_toml(tmp_path, '[data]\ntrain = "/x.csv"\n[train]\nepochs = 9\nlr = 1e-4\n')
    cfg = load_config(path, ["train.epochs=2"])
    assert cfg.train.epochs == 2
    assert cfg.train.lr == pytest.approx(1e-4)


def test_overrides_do_not_mutate_the_callers_tree():
    tree = base_tree()
    tree["train"] = {"epochs": 4}
    first = load_config(tree=tree, overrides=["train.epochs=1", "train.lr=1e-3"])
    second = load_config(tree=tree)
    assert first.train.epochs == 1
    assert second.train.epochs == 4
    assert second.train.lr == pytest.approx(TrainConfig().lr)
    assert tree == {"data": {"task": "classification", "train": "/abs/train.csv"}, "train": {"epochs": 4}}


def test_malformed_override_without_equals():
    msg = error_of(tree=base_tree(), overrides=["train.lr"])
    assert "'train.lr'" in msg
    assert "KEY=VALUE" in msg


def test_override_through_a_value_is_an_error():
    tree = base_tree()
    tree["train"] = {"epochs": 3}
    with pytest.raises(ConfigError, match=r"'epochs' is a value, not a section"):
        apply_overrides(tree, ["train.epochs.x=1"])


# --------------------------------------------------------------------------- ${VAR} expansion


def test_reflectlm_data_expansion(monkeypatch, tmp_path):
    monkeypatch.setenv("REFLECTLM_DATA", str(tmp_path / "shared"))
    cfg = load_config(tree={"data": {"train": "${REFLECTLM_DATA}/banking77/train.csv",
                                     "test": "${REFLECTLM_DATA}/banking77/test.csv"}})
    assert cfg.data.train == f"{tmp_path}/shared/banking77/train.csv"
    assert cfg.data.test == f"{tmp_path}/shared/banking77/test.csv"


def test_reflectlm_data_has_a_default(monkeypatch):
    monkeypatch.delenv("REFLECTLM_DATA", raising=False)
    cfg = load_config(tree={"data": {"train": "${REFLECTLM_DATA}/x.csv"}})
    assert cfg.data.train == "../shared/data/x.csv"


def test_other_env_var_expansion(monkeypatch):
    monkeypatch.setenv("MY_CORPUS_DIR", "/corpora")
    cfg = load_config(tree={"data": {"train": "${MY_CORPUS_DIR}/a.csv"}})
    assert cfg.data.train == "/corpora/a.csv"


def test_unset_env_var_is_an_error(monkeypatch):
    monkeypatch.delenv("FOO", raising=False)
    msg = error_of(tree={"data": {"train": "${FOO}/a.csv"}})
    assert "${FOO}" in msg
    assert "FOO is not set" in msg


# --------------------------------------------------------------------------- validation messages


def test_unknown_key_names_it_and_suggests_the_near_one():
    msg = error_of(tree=base_tree(), overrides=["train.lrr=1e-4"])
    assert "train.lrr: unknown key" in msg
    assert "did you mean 'lr'?" in msg
    assert "Valid keys here:" in msg and "epochs" in msg


def test_unknown_key_in_nested_section_and_file(tmp_path):
    path = write_toml(tmp_path, '[data]\ntrain = "/x.csv"\n[model.lstm]\nhidden_sise = 3\n')
    msg = error_of(path)
    assert "model.lstm.hidden_sise: unknown key" in msg
    assert "did you mean 'hidden_size'?" in msg


def test_unknown_section_suggests_the_near_one():
    msg = error_of(tree={**base_tree(), "trian": {"epochs": 1}})
    assert "trian: unknown key" in msg
    assert "did you mean 'train'?" in msg


def test_invalid_literal_names_key_and_allowed_values():
    msg = error_of(tree=base_tree(), overrides=['train.optimizer="sgd"'])
    assert "train.optimizer" in msg
    assert "'adamw'" in msg and "'adafactor'" in msg
    assert "'sgd'" in msg


@pytest.mark.parametrize("override, key, bound", [
    ("train.epochs=0", "train.epochs", "greater than or equal to 1"),
    ("train.lr=-1e-5", "train.lr", "greater than 0"),
    ("data.selection_fraction=1.0", "data.selection_fraction", "less than 1"),
    ("model.lstm.dropout=1.5", "model.lstm.dropout", "less than 1"),
    ("model.dropout=1.5", "model.dropout", 'in [0, 1) or "pretrained"'),
    ("model.dropout=some", "model.dropout", 'in [0, 1) or "pretrained"'),
])
def test_out_of_range_values(override, key, bound):
    msg = error_of(tree=base_tree(), overrides=[override])
    assert f"{key}:" in msg
    assert bound in msg


def test_wrong_type_names_key_and_value():
    msg = error_of(tree=base_tree(), overrides=["train.batch_size=many"])
    assert "train.batch_size:" in msg
    assert "'many'" in msg


def test_missing_data_train(tmp_path):
    path = write_toml(tmp_path, '[data]\ntask = "ner"\n')
    msg = error_of(path)
    assert "data.train: required but missing" in msg
    assert "--set data.train=" in msg


def test_several_errors_reported_at_once():
    msg = error_of(tree=base_tree(), overrides=["train.epochs=0", "train.lrr=1"])
    assert "train.epochs:" in msg and "train.lrr:" in msg


def test_missing_config_file(tmp_path):
    msg = error_of(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in msg
    assert "does not exist" in msg


def test_invalid_toml_names_the_file(tmp_path):
    path = write_toml(tmp_path, '[data]\ntrain = "unterminated\n', name="broken.toml")
    msg = error_of(path)
    assert str(path) in msg
    assert "not valid TOML" in msg


def test_entity_f1_needs_ner():
    msg = error_of(tree=base_tree("classification"), overrides=["train.metric=entity_f1"])
    assert "train.metric = 'entity_f1' is not computed for data.task = 'classification'" in msg
    assert "'macro_f1'" in msg
    assert "/abs/train.csv" not in msg  # the message, not a dump of the whole tree


def test_classification_metric_with_ner_is_an_error():
    msg = error_of(tree=base_tree("ner"), overrides=["train.metric=macro_f1"])
    assert "data.task = 'ner'" in msg and "entity_f1" in msg


@pytest.mark.parametrize("task, metric, expected", [
    ("classification", None, "macro_f1"),
    ("ner", None, "entity_f1"),
    ("classification", "accuracy", "accuracy"),
    ("ner", "loss", "loss"),
])
def test_selection_metric(task, metric, expected):
    overrides = [f"train.metric={metric}"] if metric else []
    assert load_config(tree=base_tree(task), overrides=overrides).selection_metric == expected


def test_config_assignment_is_validated():
    cfg = load_config(tree=base_tree())
    with pytest.raises(ValueError, match="epochs"):
        cfg.train.epochs = 0


# --------------------------------------------------------------------------- dump


def round_trip(cfg: Config) -> Config:
    return validate_tree(tomllib.loads(dump_toml(cfg)))


def test_dump_toml_round_trips_defaults():
    cfg = load_config(tree=base_tree())
    assert round_trip(cfg) == cfg


def test_dump_toml_round_trips_everything_set(tmp_path):
    cfg = load_config(tree={
        "data": {"task": "ner", "train": "C:\\data\\tr\"ain.conll", "selection": "/s.conll", "max_length": 64,
                 "sample": 100},
        "model": {"kind": "lstm", "name": "my model", "dropout": 0.3,
                  "lstm": {"hidden_size": 64, "num_layers": 2, "bidirectional": False}},
        "train": {"epochs": 4, "lr": 3e-5, "head_lr": 1e-3, "optimizer": "adafactor", "schedule": "cosine",
                  "early_stopping_patience": 2, "metric": "entity_f1", "freeze": "last_n", "threads": 2,
                  "layerwise_lr_decay": 0.9, "seed": 7, "record_dynamics": False},
        "run": {"name": "ünïcode run", "quiet": True},
    })
    back = round_trip(cfg)
    assert back == cfg
    assert back.data.train == "C:\\data\\tr\"ain.conll"
    assert back.train.lr == 3e-5  # exact: repr() of a float round-trips
    assert back.model.lstm.num_layers == 2
    assert back.selection_metric == "entity_f1"


def test_no_clipping_survives_the_round_trip():
    # None means "no clipping", but TOML has no null: it is stored as 0, which also means no clipping.
    cfg = load_config(tree={**base_tree(), "train": {"max_grad_norm": None}})
    assert cfg.train.max_grad_norm == 0.0
    assert round_trip(cfg).train.max_grad_norm == 0.0
    assert load_config(tree=base_tree(), overrides=["train.max_grad_norm=0"]).train.max_grad_norm == 0.0


def test_dump_leaves_out_none_values():
    text = dump_toml(load_config(tree=base_tree()))
    parsed = tomllib.loads(text)
    assert "selection" not in parsed["data"]
    assert "metric" not in parsed["train"]
    assert parsed["model"]["lstm"]["hidden_size"] == 128
    assert text.startswith("[data]\n")


def test_dropout_pretrained_survives_the_toml_round_trip():
    # "keep the model's own dropout" must read back from a run's config.toml as written (a None
    # would be left out of the TOML and come back as the default 0.0)
    for value in ("pretrained", 0.25, 0.0):
        cfg = load_config(tree=base_tree(), overrides=[f"model.dropout={value}"])
        assert load_config(tree=tomllib.loads(dump_toml(cfg))).model.dropout == value


def test_loop_backend_parallel_and_ray_resources_are_validated():
    from reflectlm.config import ConfigError, load_config

    base = {"data": {"train": "x.csv"}}
    cfg = load_config(tree=base, overrides=["loop.backend=ray", "loop.parallel=3", "loop.ray.num_cpus=2",
                                            "loop.ray.memory_gib=1.5", 'loop.ray.address="auto"'])
    assert (cfg.loop.backend, cfg.loop.parallel, cfg.loop.ray.num_cpus, cfg.loop.ray.memory_gib,
            cfg.loop.ray.address) == ("ray", 3, 2.0, 1.5, "auto")
    assert load_config(tree=base).loop.backend == "local" and load_config(tree=base).loop.parallel == 1
    for bad, match in [("loop.backend=dask", "loop.backend"), ("loop.parallel=0", "loop.parallel"),
                       ("loop.ray.num_cpus=0", "loop.ray.num_cpus"), ("loop.ray.gpus=1", "did you mean 'num_gpus'"),
                       ("loop.ray.threads=0", "loop.ray.threads")]:
        with pytest.raises(ConfigError, match=match):
            load_config(tree=base, overrides=[bad])
