import json

import pytest

from marc_keras.probing.mra_plot import plot_mra, write_mra_report
from marc_keras.utils.markdown_tables import mra_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def curve(method, aucs):
    return [
        {
            "method": method,
            "layer": layer,
            "name": f"{method}/layer-{layer}",
            "auc_mean": value,
            "auc_std": 0.002,
            "logloss_mean": 0.55,
            "logloss_std": 0.01,
            "aucs": [value],
            "loglosses": [0.55],
            "seconds": 3.0,
        }
        for layer, value in enumerate(aucs)
    ]


def marker(name, value, **extra):
    return {
        "name": name,
        "auc_mean": value,
        "auc_std": 0.001,
        "logloss_mean": 0.56,
        "logloss_std": 0.0,
        "seconds": 2.0,
        **extra,
    }


def test_report_writes_a_png_and_the_numbers(tmp_path):
    rows = curve("frozen", [0.781, 0.790, 0.795, 0.792]) + curve(
        "marc", [0.781, 0.792, 0.799, 0.801]
    )
    markers = [marker("dcnv2", 0.7833), marker("marc/marc-c", 0.8011, method="marc", layer=3)]
    report = {"seeds": [0], "rows": rows, "markers": markers}
    paths = write_mra_report(tmp_path / "probe", report, title="MRA")
    png = paths["plot"].read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    assert json.loads(paths["json"].read_text()) == report
    markdown = paths["markdown"].read_text()
    assert markdown.count("\n") == 2 + len(rows) + len(markers)
    assert "| marc | 3 | 0.8010 +- n/a |" in markdown  # one seed: no spread
    assert "| marc/marc-c | 3 | 0.8011 +- 0.0010 |" in markdown and "| dcnv2 | - |" in markdown
    assert not list((tmp_path / "probe").glob(".partial-*"))


def test_single_method_without_markers(tmp_path):
    path = plot_mra(curve("frozen", [0.78, 0.79]), tmp_path / "mra.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert (
        mra_markdown(curve("frozen", [0.78])).splitlines()[-1].startswith("| frozen | 0 | 0.7800")
    )


def test_bad_rows_are_explained(tmp_path):
    with pytest.raises(ValueError, match="at least one row"):
        plot_mra([], tmp_path / "mra.png")
    with pytest.raises(ValueError, match=r"lacks \['layer'\]"):
        plot_mra([{"method": "x", "auc_mean": 0.7, "auc_std": 0.0}], tmp_path / "mra.png")
    assert not (tmp_path / "mra.png").exists()
