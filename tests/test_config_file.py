"""--config FILE.toml / config.json and --print-config for cuvae-train, cuvae-sweep and cuvae-tui."""

import json

import pytest

from cuvae.cli import sweep, train
from cuvae.engine import config_file
from cuvae.engine.options import run_main
from cuvae.errors import CuvaeError
from conftest import SUBSET


def parse(tmp_path, text, *argv, parser=None, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return config_file.parse_args(parser or train.build_parser(), ["--config", str(path), *argv])


def error_of(tmp_path, text, name="run.toml", parser=None):
    with pytest.raises(CuvaeError) as info:
        parse(tmp_path, text, parser=parser, name=name)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_file_values_and_command_line_override(tmp_path):
    text = 'latent = 3\nhidden = [32, 16]\nlr = 0.003\nbinarize = "dynamic"\njson = true\n[training]\nepochs = 4\n'
    args = parse(tmp_path, text)
    assert (args.latent, args.hidden, args.lr, args.binarize, args.json, args.epochs) == (3, [32, 16], 0.003, "dynamic", True, 4)
    args = parse(tmp_path, text, "--latent", "5", "--epochs", "2")
    assert (args.latent, args.epochs, args.hidden) == (5, 2, [32, 16])
    # kebab-case keys and aliases work too
    args = parse(tmp_path, 'batch-size = 20\narch = "mlp"\n')
    assert (args.batch_size, args.arch_type) == (20, "mlp")


@pytest.mark.parametrize("text, expected", [
    ("laten = 3", ["'laten'", "did you mean latent", "batch_size"]),
    ("latent = 0", ["latent = 0", "positive integer"]),
    ('latent = "3"', ['latent = "3"', "expected a positive integer"]),
    ("latent = [3]", ["one value, not a list", "positive integer"]),
    ("lr = -1.0", ["lr = -1.0", "positive number"]),
    ('binarize = "sometimes"', ['"sometimes"', "one of: none, static, dynamic"]),
    ('json = "yes"', ["json", "true or false"]),
    ("hidden = 16.5", ["hidden", "a list, each a positive integer"]),
    ("latent = 3\nlatent = 4", ["not valid TOML"]),
])
def test_bad_files_are_one_line_naming_file_key_and_allowed_values(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert str(tmp_path / "run.toml") in message
    for part in expected:
        assert part in message, message


def test_a_runs_config_json_repeats_the_run(tmp_path):
    """cuvae-train writes config.json; --config RUN/config.json trains the same model, the effective
    config (file + command line) is what lands in the new run's config.json."""
    first = tmp_path / "a"
    base = ["--device", "cpu", "--data-dir", str(SUBSET), "--json"]
    assert train.main([*base, "--out", str(first), "--latent", "3", "--hidden", "16", "--train-size", "200",
                       "--test-size", "50", "--batch-size", "50", "--epochs", "1", "--lr", "0.002"]) == 0
    second = tmp_path / "b"
    assert train.main([*base, "--config", str(first / "config.json"), "--out", str(second), "--epochs", "2"]) == 0
    a, b = (json.loads((d / "config.json").read_text()) for d in (first, second))
    assert b["epochs"] == 2 and {**a, "epochs": 2} == b
    lines = [json.loads(s) for s in (second / "metrics.jsonl").read_text().splitlines()]
    first_epoch = json.loads((first / "metrics.jsonl").read_text().splitlines()[0])
    assert lines[0]["test_loss"] == first_epoch["test_loss"]  # same options, same seed: the same first epoch


def test_print_config_round_trips(tmp_path, capsys):
    assert train.main(["--recipe", "chapter", "--latent", "3", "--clip-norm", "50", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert 'recipe = "chapter"' in text and "likelihood = \"gaussian\"" in text and "latent = 3" in text
    assert "# train_size =" in text  # unset options stay in the file, commented out
    args = parse(tmp_path, text)
    direct = train.build_parser().parse_args(["--recipe", "chapter", "--latent", "3", "--clip-norm", "50"])
    assert {**config_file.train_values(args), "config": None} == config_file.train_values(direct)
    (tmp_path / "p.toml").write_text(text)
    assert train.main(["--config", str(tmp_path / "p.toml"), "--print-config"]) == 0
    assert capsys.readouterr().out == text


def test_cli_exit_code_2_and_one_line(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("epochs = 0\n")
    assert run_main(train.main, ["--config", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.toml: epochs = 0" in err
    assert run_main(train.main, ["--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_sweep_file_lists_its_axes(tmp_path, capsys):
    text = f"""
out = "{tmp_path / 'sw'}"
[axes]
latent = [2, 3]
seeds = [1, 2]
with_ae = true
[training]
epochs = 1
hidden = [16]
train_size = 100
test_size = 40
batch_size = 50
device = "cpu"
data_dir = "{SUBSET}"
"""
    args = parse(tmp_path, text, parser=sweep.build_parser())
    assert (args.latent, args.seeds, args.with_ae, args.epochs) == ([2, 3], [1, 2], True, [1])  # one value of an axis
    args = parse(tmp_path, text, "--latent", "4", parser=sweep.build_parser())
    assert args.latent == [4]
    (tmp_path / "s.toml").write_text(text)
    assert sweep.main(["--config", str(tmp_path / "s.toml"), "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "latent = [2, 3]" in printed and "seeds = [1, 2]" in printed
    message = error_of(tmp_path, "seeds = [1.5]", parser=sweep.build_parser())
    assert "seeds" in message and "integer" in message
    # a run's config.json: its seed is one run's, and the sweep says which flag it takes
    (tmp_path / "config.json").write_text(json.dumps({"latent": 3, "seed": 4, "image_shape": [1, 28, 28]}))
    with pytest.raises(CuvaeError, match="--seeds 4"):
        sweep.main(["--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "x")])


@pytest.mark.parametrize("text, expected", [
    ("lr = [0.001, -1.0]", ["lr = [0.001, -1.0]", "expected a positive number, or a list of them (one run each)"]),
    ('activation = ["relu", "sigmoid"]', ['"sigmoid"', "expected one of: relu, tanh, or a list of them"]),
    ('lr = ["0.001"]', ["lr", "a positive number"]),
    ("hidden = [[16], []]", ["hidden", "an empty list", "or a list of such lists"]),
])
def test_sweep_axis_values_are_checked_like_training_values(tmp_path, capsys, text, expected):
    message = error_of(tmp_path, text, parser=sweep.build_parser())
    assert str(tmp_path / "run.toml") in message
    for part in expected:
        assert part in message, message
    assert run_main(sweep.main, ["--config", str(tmp_path / "run.toml"), "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == f"error: {message}\n" and not (tmp_path / "s").exists()


def test_sweep_axes_over_list_valued_options(tmp_path):
    args = parse(tmp_path, "out = \"x\"\nhidden = [[32, 16], [64]]\nlr = 0.002\n", parser=sweep.build_parser(), name="s.toml")
    axes, fixed = sweep.split_axes(args)
    assert axes == {"hidden": [[32, 16], [64]]} and fixed == {"lr": 0.002}
    assert sweep.run_name("vae", 8, 1, [("hidden", [32, 16]), ("dataset", "folder:/a b")]) == \
        "vae-z8-hidden_32x16-dataset_folder__a_b-s1"


def test_tui_takes_a_config_file(tmp_path):
    from cuvae_tui.options import parse_args

    (tmp_path / "ui.toml").write_text('latent = 2\nascii = true\nruns = "elsewhere"\n')
    args = parse_args(["--config", str(tmp_path / "ui.toml")])
    assert (args.latent, args.ascii, str(args.runs)) == (2, True, "elsewhere")
    (tmp_path / "ui.toml").write_text('out = "x"\n')
    with pytest.raises(CuvaeError, match="does not take --out"):
        parse_args(["--config", str(tmp_path / "ui.toml")])


def test_the_readme_example_files_are_complete_and_valid(tmp_path):
    import re

    from conftest import ROOT

    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    train_file = next(b for b in blocks if "cuvae-train --config" in b)
    sweep_file = next(b for b in blocks if "cuvae-sweep --config" in b)
    args = parse(tmp_path, train_file)
    shown = set(re.findall(r"^(\w+) =", train_file, re.M))
    assert shown == set(config_file.options(train.build_parser())) & {a.dest for a in train.build_parser()._actions} \
        - {"resume"}, "the README's complete file lacks or invents options"
    assert (args.recipe, args.clip_norm, args.mlflow) == ("chapter", 100.0, "sqlite:///mlflow.db")
    args = parse(tmp_path, sweep_file, parser=sweep.build_parser())
    assert (args.latent, args.seeds, args.jobs, args.lr) == ([2, 5, 8, 20], [1, 2], 2, [1e-3, 3e-4])
    assert sweep.split_axes(args)[0] == {"lr": [1e-3, 3e-4]}
