import pytest

from r1lab import config as C


def test_defaults_are_valid_and_overrides_apply_with_types():
    cfg = C.build({"rl": {"group_size": 16}}, C.parse_overrides(["--model.ffn", "dense", "--eval.ks", "[1, 4]", "--resume", "--rl.lr=0.5"]))
    assert (cfg.rl.group_size, cfg.model.ffn, cfg.eval.ks, cfg.resume, cfg.rl.lr) == (16, "dense", [1, 4], True, 0.5)
    assert isinstance(C.build(C.parse_overrides(["--rl.lr", "1"])).rl.lr, float)
    assert C.build(C.parse_overrides(["--rl.lr", "1e-4"])).rl.lr == 1e-4  # YAML 1.1 reads this as a string


@pytest.mark.parametrize(
    "args,key",
    [
        (["--rl.groupsize", "3"], "rl.groupsize"),
        (["--nope", "1"], "nope"),
        (["--rl.group_size", "1"], "rl.group_size"),
        (["--rl.lr", "-1"], "rl.lr"),
        (["--pretrain.lr", "0"], "pretrain.lr"),
        (["--model.top_k", "9"], "model.top_k"),
        (["--rl.lr", "abc"], "rl.lr"),
        (["--rl.steps", "1.5"], "rl.steps"),
        (["--resume", "maybe"], "resume"),
        (["--model.ffn", "sparse"], "model.ffn"),
        (["--rl", "3"], "rl"),
        (["--eval.ks", "[1, 99]"], "eval.ks"),
        (["--model.d_model", "30"], "model.d_model"),
        (["--rl.sample.temperature", "0"], "rl.sample.temperature"),
    ],
)
def test_bad_values_name_the_key(args, key):
    with pytest.raises(C.ConfigError, match=key.replace(".", r"\.")):
        C.build(C.parse_overrides(args))


def test_yaml_files(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("rl:\n  group_size: 4\nmodel:\n  ffn: dense\n")
    assert C.build(C.load_yaml(good)).rl.group_size == 4
    for text, match in [("- a\n- b\n", "mapping"), ("rl: [\n", "not valid YAML"), ("rl:\n  bogus: 1\n", "rl.bogus")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(C.ConfigError, match=match):
            C.build(C.load_yaml(bad))
    with pytest.raises(C.ConfigError, match="does not exist"):
        C.load_yaml(tmp_path / "missing.yaml")


def test_saved_config_loads_back_identically(tmp_path):
    cfg = C.build(C.parse_overrides(["--rl.group_size", "4", "--eval.ks", "[1, 2]"]))
    C.save(cfg, tmp_path / "c.yaml")
    assert C.build(C.load_yaml(tmp_path / "c.yaml")) == cfg


def test_every_field_is_documented():
    undocumented = [key for key, _, doc in C.describe() if not doc]
    assert undocumented == []


def test_shipped_preset_by_name_and_unknown_preset_lists_them(tmp_path):
    from r1lab import config as config_lib

    assert "zero" in config_lib.presets()
    assert config_lib.load_yaml("zero")["task"] == "chain"
    with pytest.raises(config_lib.ConfigError, match="shipped presets: .*zero"):
        config_lib.load_yaml("no-such-preset")


def test_help_into_a_closed_pipe_exits_quietly():
    """`r1lab rl --help | head` when the reader has already gone: no BrokenPipe traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "r1lab.cli", "rl", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves before the child has started up and printed anything
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert err == "" and proc.returncode == 141, (proc.returncode, err)
