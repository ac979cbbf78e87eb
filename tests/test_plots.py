"""The shared plotting module writes real images, and an experiment folder holds what it promises."""

import json

import matplotlib.image as mpimg

from r1lab.report import experiment, plots


def test_curves_bars_heatmap_write_nonblank_pngs(tmp_path):
    arms = {"a": [([0, 1, 2], [0.1, 0.5, 0.9]), ([0, 1, 2], [0.2, 0.4, 0.8])], "b": [([0, 1, 2], [0.3, 0.3, 0.3])]}
    paths = [
        plots.curves(tmp_path / "c.png", arms, title="t", xlabel="step", ylabel="pass@1"),
        plots.bars(tmp_path / "b.png", {"a": [0.1, 0.3], "b": [0.5]}, title="t", ylabel="pass@1"),
        plots.grouped_bars(tmp_path / "g.png", {"x": [0.1, 0.4], "y": [0.0, 0.2]}, series=["base", "rl"], title="t", ylabel="pass@1"),
        plots.heatmap(tmp_path / "h.png", [[1, 2, 3], [3, 2, 1]], title="t", xlabel="expert", ylabel="layer", colorbar="load"),
    ]
    for p in paths:
        img = mpimg.imread(p)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_experiment_folder_has_table_and_summary(tmp_path, capsys):
    rows = [{"arm": "moe", "loss": 1.5}, {"arm": "dense", "loss": 1.7}]
    path = experiment.write(tmp_path / "x", "demo", rows, {"verdict": "moe lower"})
    body = json.loads(path.read_text())
    assert body["experiment"] == "demo" and body["rows"] == rows and body["verdict"] == "moe lower"
    assert "dense" in (tmp_path / "x" / "table.md").read_text()
    assert "moe" in capsys.readouterr().out
