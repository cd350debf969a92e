"""``mgkd report``: seed aggregation, the paper's tables, stand-ins, leftover rows, figures and the efficiency table."""
import json

import pytest
from typer.testing import CliRunner

from mgkd_spacy.cli import app
from mgkd_spacy.cli.report import crowded, pipeline_name, teacher_name


def write(metrics, stem, p, r, f):
    metrics.mkdir(exist_ok=True)
    (metrics / f"{stem}.json").write_text(json.dumps({"ents_p": p, "ents_r": r, "ents_f": f, "ents_per_type": {}}))


def report(tmp_path, *options):
    args = ["report", "toy", str(tmp_path / "metrics"), "--output-dir", str(tmp_path / "out"), *options]
    result = CliRunner().invoke(app, args)
    text = (tmp_path / "out" / "toy.md").read_text() if result.exit_code == 0 else ""
    return result, text


def section(text, title):
    """The markdown of one section (up to the next heading)."""
    return text.split(f"## {title}\n")[1].split("\n## ")[0]


def speed_report(tmp_path, file_name, words_per_second):
    """Report a vanilla row and a speed file of one-parameter pipelines, ``{model: words/s}``, in that order."""
    write(tmp_path / "metrics", "vanilla", 0.80, 0.80, 0.80)
    common = {"words": 1000, "trainable_params": 1, "total_params": 1, "disk_bytes": 1_000_000, "batch_size": 64, "threads": 2}
    speed = [{"model": model, "words_per_second": wps, **common} for model, wps in words_per_second.items()]
    (tmp_path / "metrics" / file_name).write_text(json.dumps(speed))
    return report(tmp_path)


def test_seeds_give_mean_sample_std_and_gain_from_the_mean(tmp_path):
    metrics = tmp_path / "metrics"
    write(metrics, "vanilla", 0.80, 0.80, 0.80)
    write(metrics, "te_seq", 0.86, 0.90, 0.87)
    write(metrics, "te_seq_seed1", 0.87, 0.90, 0.88)
    write(metrics, "te_seq_seed2", 0.91, 0.90, 0.89)
    result, text = report(tmp_path, "--command", "spacy project run all")
    assert result.exit_code == 0, result.output
    # P: 86, 87, 91 -> mean 88, sample std sqrt(7) = 2.65 (population std would be 2.16); F1: 87, 88, 89 -> 88 ± 1
    assert "| +TE +SEQ | 88.00 ± 2.65 (n=3) | 90.00 ± 0.00 (n=3) | 88.00 ± 1.00 (n=3) | +8.00 |" in section(text, "Table 1: main results")
    assert "| Vanilla BiLSTM+CRF | 80.00 | 80.00 | 80.00 |  |" in text
    assert "Seeds: te_seq (n=3); other rows one seed." in text
    assert "`spacy project run all`" in text and str(metrics) in text
    assert "te_seq_seed" not in text  # seed files are not rows of their own


def test_baseline_option(tmp_path):
    write(tmp_path / "metrics", "vanilla", 0.80, 0.80, 0.80)
    write(tmp_path / "metrics", "te", 0.85, 0.85, 0.85)
    _, text = report(tmp_path, "--baseline", "te")
    assert "gain over te |" in text and "| Vanilla BiLSTM+CRF | 80.00 | 80.00 | 80.00 | -5.00 |" in text


def test_tables_without_rows_are_left_out(tmp_path):
    write(tmp_path / "metrics", "vanilla", 0.80, 0.80, 0.80)
    write(tmp_path / "metrics", "te", 0.85, 0.85, 0.85)
    result, text = report(tmp_path)
    assert result.exit_code == 0, result.output
    assert "## Table 1: main results" in text
    for title in ("Table 2", "Table 3", "Table 4", "Figure 4", "Figure 5", "Other rows"):
        assert f"## {title}" not in text
    assert not list((tmp_path / "out").glob("*.png"))


def test_stand_ins_and_figures(tmp_path):
    metrics = tmp_path / "metrics"
    for stem, f in (("te_seq", 0.87), ("te_da_seq", 0.88), ("k1", 0.84), ("k5", 0.86), ("da2000", 0.875)):
        write(metrics, stem, f, f, f)
    write(metrics, "k5_seed1", 0.88, 0.88, 0.88)
    result, text = report(tmp_path)
    assert result.exit_code == 0, result.output
    k = section(text, "Figure 4: F1 vs K")
    assert [line.split(" | ")[0] for line in k.splitlines() if line.startswith("| ")][1:] == ["| 1", "| 5", "| 15 (te_da_seq)"]
    assert "| 5 | 87.00 ± 1.41 (n=2) |" in k and "| 15 (te_da_seq) | 88.00 |" in k
    da = section(text, "Figure 5: F1 vs unlabeled sentences")
    assert "| 0 (te_seq) | 87.00 |" in da and "| 2000 | 87.50 |" in da and "| 30000 (te_da_seq) | 88.00 |" in da
    assert "| 10000" not in da
    result, text = report(tmp_path, "--unlabeled-all", "10000")
    da = section(text, "Figure 5: F1 vs unlabeled sentences")
    assert "| 10000 (te_da_seq) | 88.00 |" in da and "| 30000" not in da
    result, text = report(tmp_path, "--unlabeled-all", "5000")
    rows = [line.split(" | ")[0] for line in section(text, "Figure 5: F1 vs unlabeled sentences").splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| 0 (te_seq)", "| 2000", "| 5000 (te_da_seq)"]
    for suffix in ("k", "da"):
        png = tmp_path / "out" / f"toy_f1_vs_{suffix}.png"
        assert png.read_bytes().startswith(b"\x89PNG") and f"]({png.name})" in text


def test_crowded_x_values_get_a_symlog_axis():
    assert crowded([0, 2000, 10000, 30000])  # the 0 and 2000 labels would collide on a linear axis
    assert not crowded([1, 3, 5, 10, 15]) and not crowded([0, 2000, 10000]) and not crowded([5])


def test_no_figure_from_stand_ins_alone(tmp_path):
    write(tmp_path / "metrics", "te_seq", 0.87, 0.87, 0.87)
    write(tmp_path / "metrics", "te_da_seq", 0.88, 0.88, 0.88)
    _, text = report(tmp_path)
    assert "## Table 1: main results" in text and "Figure" not in text
    assert not list((tmp_path / "out").glob("*.png"))


def test_tables_that_would_only_repeat_earlier_rows_are_left_out(tmp_path):
    # Table 2, Table 3 and the precision table all name te_seq / te_da_seq, which Table 1 already shows.
    for stem, f in (("vanilla", 0.80), ("te_seq", 0.87), ("te_da_seq", 0.88)):
        write(tmp_path / "metrics", stem, f, f, f)
    _, text = report(tmp_path)
    assert [line for line in text.splitlines() if line.startswith("## ")] == ["## Table 1: main results"]
    write(tmp_path / "metrics", "te_seq_equal", 0.86, 0.86, 0.86)
    _, text = report(tmp_path)
    weighting = section(text, "Table 3: loss weighting")
    assert "| auto (uncertainty), no DA | 87.00 |" in weighting and "| equal, no DA | 86.00 |" in weighting
    assert "## Table 2" not in text and "## Tagging precision" not in text


def test_unknown_rows_are_listed_under_other_rows(tmp_path):
    metrics = tmp_path / "metrics"
    write(metrics, "vanilla", 0.80, 0.80, 0.80)
    write(metrics, "mystery", 0.70, 0.70, 0.70)
    write(metrics, "mystery_seed1", 0.72, 0.72, 0.72)
    _, text = report(tmp_path)
    other = section(text, "Other rows")
    assert "| mystery | 71.00 ± 1.41 (n=2) |" in other and "vanilla" not in other


@pytest.mark.parametrize("title,rows,lines", [
    ("Tagging precision", {"te_da_seq": (0.88, 0.86, 0.87), "te_da_seq_bf16": (0.881, 0.861, 0.871)},
     ["| +TE +DA +SEQ, float32 | 88.00 | 86.00 | 87.00 |", "| +TE +DA +SEQ, bfloat16 | 88.10 | 86.10 | 87.10 |"]),
    ("BERT-base-size teacher", {"teacher_mpnet": (0.90, 0.90, 0.90), "mpnet_te_seq": (0.89, 0.88, 0.885),
                                "mpnet_te_da_seq": (0.90, 0.89, 0.895)},
     ["| MPNet teacher | 90.00 | 90.00 | 90.00 |  |", "| +TE +SEQ student of the MPNet teacher | 89.00 | 88.00 | 88.50 | -1.50 |",
      "| +TE +DA +SEQ student of the MPNet teacher (DA: 10,000 sentences) | 90.00 | 89.00 | 89.50 | -0.50 |"]),
])
def test_bfloat16_copies_and_the_mpnet_rows_have_their_own_tables(tmp_path, title, rows, lines):
    for stem, scores in rows.items():
        write(tmp_path / "metrics", stem, *scores)
    _, text = report(tmp_path)
    assert all(line in section(text, title) for line in lines)
    assert "## Other rows" not in text


def test_speed_table_is_relative_to_the_teacher(tmp_path):
    metrics = tmp_path / "metrics"
    write(metrics, "vanilla", 0.80, 0.80, 0.80)
    common = {"words": 1000, "disk_bytes": 9_400_000, "batch_size": 64, "threads": 2}
    speed = [{"model": "training/toy/vanilla/model-best", "words_per_second": 12345.6, "trainable_params": 1234567,
              "total_params": 2345678, "entity_scores": True, "lstm_precision": "bfloat16", **common},
             {"model": "training/toy/teacher/model-best", "words_per_second": 3086.4, "trainable_params": 1, "total_params": 1, **common}]
    (metrics / "speed.json").write_text(json.dumps(speed))
    _, text = report(tmp_path)
    table = section(text, "Table 4: efficiency")
    assert "| training/toy/vanilla/model-best | 12,346 | 4.00x | 1,234,567 | 2,345,678 | 9.4 | 64 | 2 | yes | bfloat16 |" in table
    assert "| training/toy/teacher/model-best | 3,086 | 1.00x |" in table and table.rstrip().endswith("| no | - |")
    assert "## Other rows" not in text  # speed.json is not a row


def test_a_named_speed_file_gets_its_own_table_relative_to_each_teacher(tmp_path):
    result, text = speed_report(tmp_path, "speed_mpnet.json", {"training/toy/teacher/model-best": 1000.0,
                                                               "training/toy/teacher_mpnet/model-best": 250.0,
                                                               "training/toy/mpnet_te_seq/model-best": 12000.0})
    table = section(text, "Table 4: efficiency (speed_mpnet.json)")
    assert "| pipeline | words/s | vs teacher | vs teacher_mpnet | trainable params |" in table
    assert "| training/toy/mpnet_te_seq/model-best | 12,000 | 12.00x | 48.00x | 1 |" in table
    header, rule, *body = [line for line in table.splitlines() if line.startswith("|")]
    assert {line.count("|") for line in body} == {header.count("|")} == {rule.count("|")}  # one column per header cell
    assert "## Table 4: efficiency\n" not in text  # no speed.json, no plain Table 4
    assert "## Other rows" not in text and "speed_mpnet" not in result.output  # not warned about as a non-row


@pytest.mark.parametrize("model,name", [("training/x/teacher/model-best", "teacher"), ("training/x/teacher_mpnet", "teacher_mpnet"),
                                        ("training/x/te_seq/model-best", None), ("training/teacher/x/te_seq", None)])
def test_teacher_name_reads_the_pipeline_folder_or_the_one_above_model_best(model, name):
    assert teacher_name(model) == name


def test_a_speed_run_without_a_teacher_is_relative_to_its_first_pipeline_named_by_its_folder(tmp_path):
    _, text = speed_report(tmp_path, "speed_recheck.json", {"training/toy/te_da_seq_int8/model-best": 2000.0,
                                                           "training/toy/peer_spacy_cnn/model-best": 1000.0})
    table = section(text, "Table 4: efficiency (speed_recheck.json)")
    assert "| pipeline | words/s | vs te_da_seq_int8 | trainable params |" in table
    assert "| training/toy/peer_spacy_cnn/model-best | 1,000 | 0.50x |" in table


@pytest.mark.parametrize("model,name", [("training/x/te_seq/model-best", "te_seq"), ("training/x/te_seq/model-last", "te_seq"),
                                        ("training/x/te_seq", "te_seq"), ("model-best", "model-best")])
def test_pipeline_name_is_the_folder_above_model_best(model, name):
    assert pipeline_name(model) == name


@pytest.mark.parametrize("files", [[], ["speed.json"]])
def test_no_rows_is_an_error(tmp_path, files):
    (tmp_path / "metrics").mkdir()
    for name in files:
        (tmp_path / "metrics" / name).write_text("[]")
    result, _ = report(tmp_path)
    assert result.exit_code != 0 and "No metrics" in result.output
    assert not (tmp_path / "out" / "toy.md").exists()


def test_json_files_that_are_not_rows_are_left_out_with_a_warning(tmp_path):
    metrics = tmp_path / "metrics"
    write(metrics, "vanilla", 0.80, 0.80, 0.80)
    (metrics / "teacher_stats.json").write_text(json.dumps({"mean_p1": 0.7}))
    result, text = report(tmp_path)
    assert result.exit_code == 0, result.output
    assert "teacher_stats.json" in result.output and "teacher_stats" not in text


def test_rows_trained_for_more_steps_group_their_seeds_and_take_the_row_label(tmp_path):
    metrics = tmp_path / "metrics"
    write(metrics, "vanilla", 0.80, 0.80, 0.80)
    write(metrics, "te_seq", 0.87, 0.87, 0.87)
    write(metrics, "te_seq_steps6000_seed0", 0.88, 0.88, 0.88)  # run_seed.py --steps names seed 0 _seed0 too
    write(metrics, "te_seq_steps6000_seed1", 0.90, 0.90, 0.90)
    write(metrics, "te_da_seq_steps6000_seed2", 0.86, 0.86, 0.86)
    write(metrics, "te_seq_steps12000_seed0", 0.89, 0.89, 0.89)
    result, text = report(tmp_path)
    assert result.exit_code == 0, result.output
    longer = section(text, "Rows trained for more steps").splitlines()
    rows = [line for line in longer if line.startswith("| +TE")]
    assert rows == ["| +TE +SEQ, 6,000 steps | 89.00 ± 1.41 (n=2) | 89.00 ± 1.41 (n=2) | 89.00 ± 1.41 (n=2) | +9.00 |",
                    "| +TE +SEQ, 12,000 steps | 89.00 | 89.00 | 89.00 | +9.00 |",
                    "| +TE +DA +SEQ, 6,000 steps | 86.00 | 86.00 | 86.00 | +6.00 |"]
    assert "| +TE +SEQ | 87.00 | 87.00 | 87.00 | +7.00 |" in section(text, "Table 1: main results")
    assert "## Other rows" not in text and "steps6000_seed" not in text


def test_seed_0_given_twice_is_an_error(tmp_path):
    metrics = tmp_path / "metrics"
    write(metrics, "te_seq", 0.87, 0.87, 0.87)
    write(metrics, "te_seq_seed0", 0.88, 0.88, 0.88)
    result, _ = report(tmp_path)
    assert result.exit_code != 0
    assert "te_seq.json and te_seq_seed0.json are both seed 0 of the row 'te_seq'" in result.output
    assert not (tmp_path / "out" / "toy.md").exists()


def write_timed(metrics, stem, f, seconds):
    write(metrics, stem, f, f, f)
    scores = json.loads((metrics / f"{stem}.json").read_text())
    (metrics / f"{stem}.json").write_text(json.dumps({**scores, "training_time": {"seconds": seconds, "steps": 3000, "words": 1}}))


def test_training_times_give_a_column_a_total_and_figure_captions(tmp_path):
    metrics = tmp_path / "metrics"
    write(metrics, "vanilla", 0.80, 0.80, 0.80)  # trained before the timed logger: no time
    write_timed(metrics, "te_seq", 0.87, 600)
    write_timed(metrics, "te_seq_seed1", 0.88, 660)
    write_timed(metrics, "te_da_seq", 0.88, 3900)
    write_timed(metrics, "k1", 0.84, 45)
    write_timed(metrics, "da2000", 0.85, 700)
    result, text = report(tmp_path, "--command", "spacy project run all")
    assert result.exit_code == 0, result.output
    main = section(text, "Table 1: main results")
    assert "| model | P | R | F1 | gain over vanilla | training time |" in main
    assert "| +TE +SEQ | 87.50 ± 0.71 (n=2) | 87.50 ± 0.71 (n=2) | 87.50 ± 0.71 (n=2) | +7.50 | 10 min |" in main
    assert "| Vanilla BiLSTM+CRF | 80.00 | 80.00 | 80.00 |  | - |" in main and "| +TE +DA +SEQ | 88.00 | 88.00 | 88.00 | +8.00 | 1 h 05 min |" in main
    assert "Training wall time: 1 h 26 min for 3 trainings; 1 more without a record" in main
    k = section(text, "Figure 4: F1 vs K")
    assert "| 1 | 84.00 | 84.00 | 84.00 | 45 s |" in k
    caption = [line for line in k.splitlines() if line.startswith("Made by")]
    assert caption == ["Made by `spacy project run all` at commit " + caption[0].split(" at commit ")[1].split(";")[0]
                       + "; 1: seed 0; 15: seed 0. Training wall time: 1 h 06 min for 2 trainings (spacy train's seconds "
                       "from the first update to the last evaluation, initialization excluded)."]
    da = section(text, "Figure 5: F1 vs unlabeled sentences")
    assert "; 0: seeds 0, 1; 2000: seed 0; 30000: seed 0. Training wall time: 1 h 38 min for 4 trainings" in da


def test_figures_without_recorded_times_say_so(tmp_path):
    for stem, f in (("te_da_seq", 0.88), ("k1", 0.84)):
        write(tmp_path / "metrics", stem, f, f, f)
    _, text = report(tmp_path)
    k = section(text, "Figure 4: F1 vs K")
    assert "| training time |" not in k and "Training wall time: not recorded for its 2 trainings" in k
