"""The report: every value from disk escaped (also in a real browser), the figures, and an
honest account of imported networks."""

import pytest

from reslab import files
from reslab.runs import gather

# ---------------------------------------------------------------------------------------------
# 9. the report escapes every value from disk

CRAFTED = "<script>document.title='pwned'</script>"


def crafted_experiment(root):
    from test_experiment import fake_run

    fake_run(root, "plain", 8, 0, [0.5, 0.4], 0.5)
    fake_run(root, "resnet", 8, 0, [0.5, 0.3], 0.4)
    a = root / "analyses"
    # Every text an analysis file may hold is crafted; where a number belongs, a text is refused
    # by the file's schema (identity.json here), so that section says why instead.
    run = {"run": CRAFTED, "label": CRAFTED, "arch": "resnet", "depth": 8}
    single = [{"block": 1, "downsampling": False, "error": 0.2}]
    lesion = {
        "images": 5,
        "samples": 1,
        "runs": [{**run, "baseline": 0.1, "blocks": 1, "single": single, "random": []}],
    }
    files.write_json(a / "lesion.json", lesion)
    row = {"arch": CRAFTED, "depth": 8, "correlation": 0.5, "correlation_std": 0.0, "values": [0.5]}
    files.write_json(
        a / "gradients.json", {"images": 5, "points": 4, "lines": 1, "runs": [], "shattering": {"rows": [row]}}
    )
    surface = {
        **run,
        "axis": [0.0],
        "line": [1.0],
        "line_error": [0.5],
        "grid": [[1.0]],
        "local_minima": 0,
        "seconds": 1.0,
    }
    landscape = {"images": 5, "resolution": 1, "span": 1.0, "precision": "fp32", "runs": [surface]}
    files.write_json(a / "landscape.json", landscape)
    made = {"source": CRAFTED, "source_label": CRAFTED, "arch": "plain", "from_depth": 8, "depth": 14}
    made |= {"identity_blocks": 3, "images": 5, "max_abs_difference": 0.0, "same_predictions": True}
    made |= {"source_train_error": 0.1, "constructed_train_error": 0.1}
    files.write_json(a / "construct.json", {"results": [made]})
    files.write_json(a / "identity.json", {"steps": 1, "plain": CRAFTED, "residual": []})
    layers = [{"layer": CRAFTED, "std": 1.0, "std_per_channel": 1.0, "gamma": 1.0}]
    finding = {"claim": CRAFTED, "holds": None, "text": CRAFTED}
    responses = {"images": 5, "split": CRAFTED, "runs": [{**run, "layers": layers}], "findings": [finding]}
    files.write_json(a / "responses.json", responses)


def test_report_escapes_crafted_analysis_files(tmp_path):
    from reslab.report import build_report

    crafted_experiment(tmp_path)
    html = build_report(tmp_path)
    assert "<script" not in html
    assert html.count("&lt;script&gt;") >= 8
    assert "analyses/identity.json could not be shown" in html


def test_report_escapes_crafted_files_in_a_real_browser(tmp_path):
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium here (apt-get install chromium) to open the crafted report in")
    from reslab.report import write_report

    crafted_experiment(tmp_path)
    page = write_report(tmp_path)
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "<title>" in dom and "pwned" not in dom.split("</title>")[0]


# ---------------------------------------------------------------------------------------------
# 12. the report's figures and its account of imported networks


def test_error_curves_mark_the_lr_drops_and_show_training_error_on_a_log_axis(tmp_path):
    from test_experiment import fake_run

    from reslab import plots

    for arch in ("plain", "resnet"):
        fake_run(tmp_path, arch, 8, 0, [0.5, 0.01, 0.0], 0.2)
    svg = plots.error_curves(gather(tmp_path)[0], tmp_path / "curves")[1].read_text()
    assert "lr ÷ 10" in svg and "training error" in svg and "test error" in svg  # a legend, not a caption
    assert "log scale above 1%" in svg  # and linear below it, so that 0% is drawn at 0


def test_report_of_imported_networks_does_not_claim_a_recipe(tmp_path):
    from test_pretrained import RefResNet, save_like_original

    from reslab.pretrained import import_checkpoint
    from reslab.report import build_report

    save_like_original(RefResNet(1), tmp_path / "r8.th")
    import_checkpoint(tmp_path / "r8.th", tmp_path / "pretrained" / "resnet-8")
    html = build_report(tmp_path / "pretrained")
    assert "1 imported network, trained elsewhere" in html and "how is not recorded" in html
    assert "warmup_lr" not in html and "weight_decay" not in html  # reslab's defaults are not its recipe
