"""`midigen models calibrate DIR`: each style's --top-p chosen on generated clips and stored in
the model folder, which a request without --top-p then uses."""

from __future__ import annotations

import json
import shutil

import pytest

from midigen.cli import main
from midigen.producer.calibrate import (
    card_section, choose, choose_in_time, measured, real_style, settings, write_settings,
)
from midigen.producer.request import DEFAULT_STYLE_STRENGTH, DEFAULT_TOP_P


def _row(good: float, files: int = 64) -> dict:
    return {"good": good, "fidelity": good, "usable": 1.0, "files": files}


def test_the_candidate_with_most_good_files_wins_only_beyond_the_noise():
    assert choose({0.9: _row(0.40), 0.95: _row(0.50), 1.0: _row(0.90)}) == 1.0  # far beyond 2 s.e.
    assert choose({0.9: _row(0.55), 0.95: _row(0.50), 1.0: _row(0.45)}) == DEFAULT_TOP_P  # within the noise of 64
    assert choose({0.9: _row(0.55, 10_000), 0.95: _row(0.50, 10_000)}) == 0.9  # the same gain, measured closely
    assert choose({0.9: _row(0.5), 0.95: _row(0.5), 1.0: _row(0.5)}) == DEFAULT_TOP_P  # a tie keeps the default
    assert choose({0.9: _row(0.2), 1.0: _row(0.3)}) == 1.0  # without the default: the best
    less_usable = {0.95: _row(0.15, 128), 1.0: {"good": 0.27, "fidelity": 0.34, "usable": 0.93, "files": 128}}
    assert choose(less_usable) == DEFAULT_TOP_P  # heard more often, in files a producer can use less often


def test_a_clearly_more_usable_candidate_with_as_many_good_files_is_taken():
    def row(good: float, usable: float) -> dict:
        return {"good": good, "fidelity": good, "usable": usable, "files": 128}

    # folk on the shipped model (128 clips): at 0.9 as many good files and usable 0.98 against 0.90
    assert choose({0.9: row(0.74, 0.98), 0.95: row(0.66, 0.90), 1.0: row(0.52, 0.69)}) == 0.9
    assert choose({0.9: row(0.75, 0.98), 0.95: row(0.70, 0.95)}) == DEFAULT_TOP_P  # within the noise
    assert choose({0.9: row(0.60, 0.99), 0.95: row(0.66, 0.90)}) == DEFAULT_TOP_P  # more usable, fewer good files


def test_a_style_strength_is_chosen_as_a_mass_is_against_zero():
    def row(good: float, usable: float = 1.0) -> dict:
        return {"good": good, "fidelity": good, "usable": usable, "files": 128, "on_beat": 0.5}

    # fiddle and chorale on the shipped model (128 clips a candidate)
    fiddle = {0.0: row(0.30, 0.99), 0.5: row(0.44, 0.98), 1.0: row(0.63, 0.98), 1.5: row(0.76, 0.98)}
    assert choose(fiddle, keep=DEFAULT_STYLE_STRENGTH) == 1.5
    chorale = {0.0: row(0.82), 0.5: row(0.92, 0.98), 1.0: row(0.67, 0.88), 1.5: row(0.16, 0.24), 2.0: row(0.0, 0.01)}
    assert choose(chorale, keep=DEFAULT_STYLE_STRENGTH) == 0.5
    # heard more often, but off its beat: a caricature is never taken
    assert choose({0.0: row(0.5), 1.0: {**row(0.6, 0.5), "fidelity": 0.95}}, keep=DEFAULT_STYLE_STRENGTH) == 0.0
    assert choose({0.0: row(0.5), 1.0: row(0.55)}, keep=DEFAULT_STYLE_STRENGTH) == 0.0  # within the noise


def _beat(good: float, usable: float, on_beat: float, sd: float = 0.12) -> dict:
    return {"good": good, "fidelity": good, "usable": usable, "files": 128, "on_beat": on_beat, "on_beat_sd": sd}


def test_among_strengths_as_good_the_one_in_the_styles_time_is_taken():
    # the shipped model's rows (128 clips a strength) and its reference's real on-beat and usable shares
    fiddle = {0.0: _beat(0.30, 0.99, 0.56), 0.5: _beat(0.44, 0.98, 0.51), 1.0: _beat(0.63, 0.98, 0.46),
              1.5: _beat(0.76, 0.98, 0.43), 2.0: _beat(0.82, 0.93, 0.39)}
    real = {"on_beat": 0.403, "usable": 0.86}
    assert choose(fiddle, keep=DEFAULT_STYLE_STRENGTH) == 1.5  # 2 is less usable than 0 beyond the noise...
    assert choose_in_time(fiddle, real) == 2.0  # ...but as usable as real reels, and in their time
    assert choose_in_time(fiddle, {**real, "usable": 0.95}) == 1.5  # steadier real music: 2 is not eligible
    irish = {0.0: _beat(0.71, 1.0, 0.69), 0.5: _beat(0.77, 1.0, 0.59), 1.0: _beat(0.62, 0.90, 0.47)}
    assert choose(irish, keep=DEFAULT_STYLE_STRENGTH) == 0.0  # 0.5 within the noise of 0 on good files alone
    assert choose_in_time(irish, {"on_beat": 0.555, "usable": 0.83}) == 0.5  # 0 is 24% more on the beat than real
    # northumbrian: 1 is right in time, 1.5 has a few more good files within a standard error
    northumbrian = {0.0: _beat(0.55, 1.0, 0.62), 0.5: _beat(0.77, 1.0, 0.56), 1.0: _beat(0.77, 0.98, 0.52),
                    1.5: _beat(0.82, 0.95, 0.49), 2.0: _beat(0.78, 0.88, 0.45)}
    assert choose_in_time(northumbrian, {"on_beat": 0.523, "usable": 0.95}) == 1.0
    # fife: 1 is in time but has clearly fewer good files (0.32 against 0.41): the rhythm does not buy them
    fife = {0.0: _beat(0.15, 1.0, 0.64), 0.5: _beat(0.24, 0.99, 0.56), 1.0: _beat(0.32, 0.99, 0.49),
            1.5: _beat(0.41, 0.97, 0.42), 2.0: _beat(0.41, 0.98, 0.37)}
    assert choose_in_time(fife, {"on_beat": 0.493, "usable": 0.89}) == 1.5
    # as close as the noise can tell (renaissance: 0.996 and 0.992 against 0.993): the most good files
    renaissance = {0.0: _beat(0.70, 0.95, 0.99, 0.03), 0.5: _beat(0.92, 0.97, 0.996, 0.03),
                   1.0: _beat(0.91, 0.95, 0.992, 0.03)}
    assert choose_in_time(renaissance, {"on_beat": 0.993, "usable": 0.95}) == 0.5
    assert choose_in_time({k: {**v, "on_beat_sd": None} for k, v in renaissance.items()},
                          {"on_beat": 0.993}) == 1.0  # rows without their spread: the closest, strictly
    # without a reference or on-beat shares: the rule on good files alone
    assert choose_in_time(fiddle, None) == choose(fiddle, keep=DEFAULT_STYLE_STRENGTH)
    assert choose_in_time({0.0: _row(0.3, 128), 1.0: _row(0.6, 128)}, real) == 1.0


def test_a_mass_and_a_strength_are_chosen_together_where_asked():
    # medieval on the shipped model: at 0.95 only strength 0 is usable enough, at 0.9 strength 0.5 is
    grid = {(0.95, 0.0): _beat(0.68, 0.99, 0.69), (0.95, 0.5): _beat(0.88, 0.92, 0.65),
            (0.9, 0.0): _beat(0.67, 0.96, 0.69), (0.9, 0.5): _beat(0.92, 0.95, 0.70),
            (1.0, 0.0): _beat(0.69, 0.91, 0.70), (1.0, 0.5): _beat(0.79, 0.91, 0.65)}
    real = {"on_beat": 0.692, "usable": 0.944}
    assert choose_in_time(grid, real, keep=(DEFAULT_TOP_P, DEFAULT_STYLE_STRENGTH)) == (0.9, 0.5)
    at_095 = {s: row for (p, s), row in grid.items() if p == 0.95}
    assert choose_in_time(at_095, real) == 0.0  # one step at a time misses it
    # as good and as close in time: the pair nearest the default wins, the strength's distance first
    even = {(0.95, 0.0): _beat(0.7, 1.0, 0.6), (0.9, 0.0): _beat(0.7, 1.0, 0.6), (0.95, 0.5): _beat(0.7, 1.0, 0.6)}
    assert choose_in_time(even, {"on_beat": 0.6}, keep=(0.95, 0.0)) == (0.95, 0.0)


def test_the_real_style_comes_from_the_models_reference():
    reference = {"styles": {"jig": {"metrics": {"on_beat": {"mean": 0.4, "p5": 0.2}}, "usable": 0.9},
                            "old": {"metrics": {"on_beat": {"mean": 0.6, "p5": 0.3}}}}}
    assert real_style(reference, "jig") == {"on_beat": 0.4, "usable": 0.9}
    assert real_style(reference, "old") == {"on_beat": 0.6, "usable": None}  # a reference from before the share
    assert real_style(reference, "reel") is None and real_style(None, "jig") is None


def test_strengths_are_stored_beside_the_masses_and_shown_in_the_card():
    cell = {"good": 0.5, "fidelity": 0.5, "usable": 1.0, "files": 4, "on_beat": 0.42}
    result = {"b": {"top_p": 1.0, "candidates": {1.0: cell}, "style_strength": 1.5,
                    "strengths": {0.0: cell, 1.5: {**cell, "good": 0.9}}}}
    sampling = settings(result, {"top_p": {"a": 0.9}}, files=4)
    assert sampling["style_strength"] == {"b": 1.5} and sampling["top_p"] == {"a": 0.9, "b": 1.0}
    assert measured(sampling)["b"]["style_strength"] == 1.5 and set(measured(sampling)["b"]["strengths"]) == {0.0, 1.5}
    card = card_section(measured(sampling), 4)
    assert "| b | 1.5 | - | 0.50 / 0.50 / 1.00 (0.42) | 0.90 / 0.50 / 1.00 (0.42) |" in card
    result["b"]["real"] = {"on_beat": 0.4, "usable": 0.88}  # what the rhythm was chosen against travels too
    assert "| b | 1.5 | 0.40 / 0.88 | 0.50" in card_section(measured(settings(result, None, files=4)), 4)
    assert "style_strength" not in settings({"b": {"top_p": 1.0, "candidates": {1.0: cell}}}, None)  # none measured


def test_settings_merge_and_the_card_section_is_rewritten_not_repeated(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": {}, "sampling": {"top_p": {"a": 0.9}}}))
    (folder / "MODEL_CARD.md").write_text("# midigen model\n\n- Styles: a, b\n")
    row = {"top_p": 1.0, "candidates": {0.95: {"good": 0.2, "fidelity": 0.2, "usable": 1.0},
                                        1.0: {"good": 0.6, "fidelity": 0.6, "usable": 1.0}}}
    write_settings(folder, {"b": row}, files=4)
    write_settings(folder, {"b": {**row, "top_p": 0.95}}, files=4)
    config = json.loads((folder / "config.json").read_text())
    assert config["sampling"]["top_p"] == {"a": 0.9, "b": 0.95}  # a's earlier setting kept, b's replaced
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.startswith("# midigen model\n\n- Styles: a, b\n")
    assert card.count("## Sampling per style") == 1 and "| b | 0.95 | 0.20 / 0.20 / 1.00 | 0.60 / 0.60 / 1.00 |" in card
    assert settings({}, None) == {"top_p": {}, "measured": {}}


@pytest.fixture
def model_copy(smoke_run, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(smoke_run["bundle"], folder)
    return folder


def test_calibrate_stores_each_styles_top_p_and_generate_uses_it(model_copy, tmp_path, capsys):
    from midigen.producer.bundle import load_bundle
    from midigen.producer.clip import sampling_options
    from midigen.producer.request import GenerateRequest

    weights = (model_copy / "model.safetensors").read_bytes()
    status = main(["models", "calibrate", str(model_copy), "--files", "4", "--candidates", "0.95,1",
                   "--work", str(tmp_path / "clips")])
    out = capsys.readouterr().out
    assert status == 0
    bundle = load_bundle(model_copy)
    chosen = bundle.meta["sampling"]["top_p"]
    assert set(chosen) == set(bundle.styles) and set(chosen.values()) <= {0.95, 1.0}
    for style in bundle.styles:
        assert f"{style}: --top-p {chosen[style]:g}" in out
        req = GenerateRequest(num=1, bars=1, seed=0, style={style: 1.0})
        assert sampling_options(bundle, req)[0].top_p == pytest.approx(chosen[style])
    # two masses, then strengths 0.5, 1, 1.5 and 2 at the chosen one (0 is the mass's own clips)
    assert len(list((tmp_path / "clips").rglob("*.mid"))) == 4 * (2 + 4) * len(bundle.styles)
    assert set(bundle.meta["sampling"]["style_strength"]) == set(bundle.styles)
    assert (model_copy / "model.safetensors").read_bytes() == weights  # the weights are not touched
    assert "## Sampling per style" in (model_copy / "MODEL_CARD.md").read_text()
    assert not (model_copy / "calibration").exists()  # no clips left in the model folder


def test_calibrate_keeps_the_masses_and_chooses_strengths_that_generate_uses(model_copy, tmp_path, capsys):
    from midigen.producer.bundle import load_bundle
    from midigen.producer.clip import sampling_options
    from midigen.producer.request import GenerateRequest

    assert main(["models", "calibrate", str(model_copy), "--files", "4", "--candidates", "1",
                 "--strengths", "off"]) == 0
    masses = load_bundle(model_copy).meta["sampling"]["top_p"]
    assert "style_strength" not in load_bundle(model_copy).meta["sampling"]
    status = main(["models", "calibrate", str(model_copy), "--files", "4", "--keep-top-p", "--strengths", "0,1",
                   "--work", str(tmp_path / "clips")])
    out = capsys.readouterr().out
    assert status == 0
    bundle = load_bundle(model_copy)
    assert bundle.meta["sampling"]["top_p"] == masses  # kept
    chosen = bundle.meta["sampling"]["style_strength"]
    assert set(chosen) == set(bundle.styles) and set(chosen.values()) <= {0.0, 1.0}
    for style in bundle.styles:
        assert f"{style}: --style-strength {chosen[style]:g}" in out
        opts = sampling_options(bundle, GenerateRequest(num=1, bars=1, seed=0, style={style: 1.0}))[0]
        assert opts.style_strength == pytest.approx(chosen[style]) and opts.top_p == pytest.approx(masses[style])
        asked = sampling_options(bundle, GenerateRequest(num=1, bars=1, seed=0, style={style: 1.0}, style_strength=0))
        assert asked[0].style_strength == 0  # a request's own strength wins
    # strength 0 at the kept mass reuses that mass's clips (as many files, same seed): only 1 is drawn again
    assert len(list((tmp_path / "clips").rglob("*.mid"))) == 4 * len(bundle.styles)
    assert "leans into each style" in (model_copy / "MODEL_CARD.md").read_text()


def test_calibrate_jointly_stores_the_pair_and_its_grid(model_copy, capsys):
    from midigen.producer.bundle import load_bundle

    assert main(["models", "calibrate", str(model_copy), "--files", "2", "--candidates", "0.9,1",
                 "--strengths", "0,1", "--joint"]) == 0
    out = capsys.readouterr().out
    sampling = load_bundle(model_copy).meta["sampling"]
    for style in load_bundle(model_copy).styles:
        grid = sampling["measured"][style]["grid"]
        assert set(grid) == {"0.9", "1"} and all(set(rows) == {"0", "1"} for rows in grid.values())
        pair = (sampling["top_p"][style], sampling["style_strength"][style])
        assert f"{pair[1]:g}" in grid[f"{pair[0]:g}"]
        assert f"{style}: chosen jointly: --top-p {pair[0]:g} --style-strength {pair[1]:g}" in out
        # the strengths' table is the one at the chosen mass
        assert sampling["measured"][style]["strengths"] == grid[f"{pair[0]:g}"]
    assert "Chosen jointly" in (model_copy / "MODEL_CARD.md").read_text()
    # drawn as trained (an explicit 0, an interpolation): the mass chosen at strength 0, not the pair's
    from midigen.producer.clip import sampling_options
    from midigen.producer.request import GenerateRequest

    bundle = load_bundle(model_copy)
    first, second = bundle.styles[:2]
    as_trained = dict(sampling["top_p_as_trained"])
    assert set(as_trained) == set(bundle.styles) and set(as_trained.values()) <= {0.9, 1.0}
    bundle.meta["sampling"]["top_p"] = {s: 0.9 for s in bundle.styles}  # the pairs' masses, set apart from it
    bundle.meta["sampling"]["top_p_as_trained"] = {first: 1.0, second: 1.0}
    plain = GenerateRequest(num=1, bars=1, seed=0, style={first: 1.0}, style_strength=0)
    assert sampling_options(bundle, plain)[0].top_p == pytest.approx(1.0)
    assert sampling_options(bundle, plain.but(style_strength=1.0))[0].top_p == pytest.approx(0.9)
    towards = plain.but(style_strength=None, towards={"style": {second: 1.0}, "weight": 0.5})
    assert sampling_options(bundle, towards)[0].top_p == pytest.approx(1.0)


@pytest.mark.parametrize("args,needle", [
    (["--style", "nope"], "unknown style nope"),
    (["--candidates", "0.9,2"], "--candidates 0.9,2"),
    (["--candidates", "x"], "--candidates x"),
    (["--files", "0"], "--files 0"),
    (["--strengths", "0,9"], "--strengths 0,9"), (["--strengths", "x"], "--strengths x"),
    (["--keep-top-p", "--strengths", "off"], "nothing to calibrate"),
    (["--keep-top-p", "--joint"], "--joint tries every strength at every mass"),
], ids=["unknown style", "mass above 1", "not a number", "no files", "strength above 8", "strength not a number",
        "nothing to do", "joint without masses"])
def test_bad_calibrate_requests_are_one_line_and_change_nothing(model_copy, capsys, args, needle):
    before = (model_copy / "config.json").read_text()
    status = main(["models", "calibrate", str(model_copy), *args])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and needle in err, err
    assert (model_copy / "config.json").read_text() == before


def test_calibrate_refuses_what_is_not_a_model_folder(tmp_path, capsys):
    assert main(["models", "calibrate", str(tmp_path)]) == 2
    assert "not a model folder" in capsys.readouterr().err
