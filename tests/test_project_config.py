"""project.yml itself: what its commands declare and pass to ``spacy train``."""
import shlex
from pathlib import Path

import pytest
import yaml
from spacy.cli._util import parse_config_overrides
from spacy.util import load_config, load_model_from_config

ROOT = Path(__file__).parent.parent
PROJECT = yaml.safe_load((ROOT / "project.yml").read_text())
COMMANDS = {command["name"]: command for command in PROJECT["commands"]}
CHINESE = ("weibo", "resume", "msra")


def scripts(prefix: str = ""):
    for command in PROJECT["commands"]:
        if command["name"].startswith(prefix):
            for line in command["script"]:
                yield command, line


def test_report_commands_declare_the_file_they_write():
    """Each ``mgkd report <dataset>`` step lists reports/<dataset>.md (what the CLI writes) as output."""
    reports = [(command, line.split()[2]) for command, line in scripts() if line.startswith("mgkd report ")]
    assert len(reports) == 7
    for command, dataset in reports:
        assert command.get("outputs") == [f"reports/{dataset}.md"], command["name"]


@pytest.mark.parametrize("dataset", CHINESE)
def test_chinese_trainings_use_the_character_segmenter(dataset):
    """spaCy's Corpus reader re-tokenizes text: with the English tokenizer a Chinese sentence is one token, every
    entity is misaligned and the CNN peer learns nothing (0 F1). Every Chinese training passes vars.zh_nlp."""
    trainings = [line for _, line in scripts(f"{dataset}-") if "python -m spacy train" in line]
    assert len(trainings) >= 4
    assert all("${vars.zh_nlp}" in line for line in trainings)


def zh_overrides() -> dict:
    return parse_config_overrides(shlex.split(PROJECT["vars"]["zh_nlp"]))


@pytest.mark.parametrize("config", ["teacher.cfg", "peer_spacy_cnn_ner.cfg", "student_vanilla.cfg", "student_te.cfg"])
def test_every_config_of_the_chinese_workflows_takes_the_zh_overrides(config):
    """An inline ``tokenizer = {...}`` cannot be overridden from the command line; a [nlp.tokenizer] section can."""
    assert load_config(ROOT / "configs" / config, overrides=zh_overrides())["nlp"]["lang"] == "zh"


@pytest.mark.parametrize("config", ["peer_spacy_cnn_ner.cfg", "student_vanilla.cfg"])
def test_zh_nlp_overrides_give_one_token_per_character(config):
    overrides = {**zh_overrides(), "paths.train": "", "paths.dev": ""}
    nlp = load_model_from_config(load_config(ROOT / "configs" / config, overrides=overrides), auto_fill=True)
    assert nlp.lang == "zh"
    assert [t.text for t in nlp.make_doc("李开复说2012年")] == list("李开复说2012年")


def test_every_te_training_sets_the_bilstm_input_width_of_its_teacher():
    """The TE student's BiLSTM reads the teacher's word-piece width + 32 shape dims, which differs per teacher:
    English trainings take vars.te_input_width (MiniLM: 416), the Chinese ones vars.te_input_width_zh
    (bert-base-chinese: 800), the MPNet workflow 800."""
    option = "--components.distilled_ner.model.tok2vec.encode.input_width"
    trainings = [(command["name"], line.split()) for command, line in scripts() if "configs/student_te.cfg" in line]
    assert len(trainings) >= 30
    for name, words in trainings:
        width = words[words.index(option) + 1]
        if name.startswith(CHINESE):
            assert width == "${vars.te_input_width_zh}", name
        else:
            assert width == ("800" if name.startswith("mpnet-") else "${vars.te_input_width}"), name
    assert PROJECT["vars"]["te_input_width"] == 384 + 32 and PROJECT["vars"]["te_input_width_zh"] == 768 + 32


def test_every_command_runs_at_most_one_training():
    """`spacy project run` records a command in project.lock only when its whole script has run, so an interrupted
    workflow reruns the command it stopped in from its first line: one training per command bounds the loss to one
    training (up to an hour here) instead of a list of them."""
    several = [name for name, command in COMMANDS.items() if sum("spacy train" in line for line in command["script"]) > 1]
    assert several == []


@pytest.mark.parametrize("row", ["peer_spacy_cnn", "peer_spacy_trf", "vanilla", "te", "te_seq", "te_da_seq"])
def test_all_trains_and_evaluates_seeds_1_and_2_of_the_rows_reported_with_spread(row):
    """Seeds 1 and 2 of a row are trained by train-<row>_seed<N>, and evaluate-seeds writes their metrics as
    <row>_seed<N>.json, the names ``mgkd report`` averages over."""
    steps = PROJECT["workflows"]["all"]
    for seed in (1, 2):
        assert steps.index(f"train-{row}_seed{seed}") < steps.index("evaluate-seeds")
        evaluation = (f"mgkd evaluate training/conll2003/{row}_seed{seed}/model-best corpus/conll2003/test.spacy "
                      f"--output metrics/conll2003/{row}_seed{seed}.json --gpu-id ${{vars.gpu_id}}")
        assert evaluation in COMMANDS["evaluate-seeds"]["script"], (row, seed)
        assert f"training/conll2003/{row}_seed{seed}/model-best" in COMMANDS["evaluate-seeds"]["deps"]
        assert f"metrics/conll2003/{row}_seed{seed}.json" in COMMANDS["evaluate-seeds"]["outputs"]


@pytest.mark.parametrize("row,command,losses,seeds", [
    ("mpnet_te_da30k_seq", "mpnet-train-te_da30k_seq", None, 3),
    ("mpnet_da30k_seq_token_em", "mpnet-train-da30k_seq_token_em", '"fuzzy": 1.0, "token_em": 1.0}', 2),
])
def test_the_30k_da_students_differ_from_the_10k_one_only_in_unlabeled_text_steps_seed_and_output(row, command, losses, seeds):
    """The 30k-DA MPNet students are mpnet-train-te_da_seq (10,000 sentences) with the other 20,000 annotated
    sentences added, vars.da30k_steps steps, their seeds (and TOKEN-EM for the second); mpnet-evaluate scores
    every seed, and the mpnet workflow runs them."""
    (main,) = COMMANDS["mpnet-train-te_da_seq"]["script"]
    assert "--system.seed ${vars.seed}" in main and "--training.max_steps ${vars.student_steps}" in main
    if losses:
        main = main.replace('"fuzzy": 1.0}', losses)
    expected = (main.replace("training/conll2003/mpnet_te_da_seq ", f"training/conll2003/{row} ")
                .replace("${vars.student_steps}", "${vars.da30k_steps}")
                .replace('["annotations/conll2003_mpnet/unlabeled"]',
                         '["annotations/conll2003_mpnet/unlabeled", "annotations/conll2003_mpnet/unlabeled_rest"]'))
    assert COMMANDS[command]["script"] == [expected]
    names = [command] + [f"{command}_seed{seed}" for seed in range(1, seeds)]
    assert [name for name in COMMANDS if name.startswith(command)] == names
    for name, suffix in zip(names, ("", "_seed1", "_seed2")):
        assert f"metrics/conll2003/{row}{suffix}.json" in COMMANDS["mpnet-evaluate"]["outputs"]
    assert "annotations/conll2003_mpnet/unlabeled_rest" in COMMANDS["mpnet-annotate-unlabeled-rest"]["outputs"]
    steps = PROJECT["workflows"]["mpnet"]
    assert steps.index("mpnet-annotate-unlabeled-rest") < steps.index(command) and set(names) <= set(steps)


@pytest.mark.parametrize("row,seq_row", [("te_seq", "te_seq"), ("te_token_em", "te_seq"),
                                         ("te_da_seq", "te_da_seq"), ("te_da_token_em", "te_da_seq")])
def test_wnut17_trains_and_evaluates_three_seeds_of_the_sequence_and_token_level_students(row, seq_row):
    """WNUT-17's teacher is far above the vanilla student, the paper's regime, so the wnut17 workflow compares
    SEQ and TOKEN-EM over seeds 0-2: a TOKEN-EM row is its SEQ row with only the losses and output changed, and
    seeds 1 and 2 are the seed-0 training with only the seed and output changed; every seed is evaluated."""
    (main,) = COMMANDS[f"wnut17-train-{row}"]["script"]
    (seq_main,) = COMMANDS[f"wnut17-train-{seq_row}"]["script"]
    seq_losses = '{"hard": 1.0, "kbest": 1.0, "fuzzy": 1.0}'
    losses = '{"hard": 1.0, "token_em": 1.0}' if "token_em" in row else seq_losses
    assert main == seq_main.replace(f"training/wnut17/{seq_row} ", f"training/wnut17/{row} ").replace(seq_losses, losses)
    assert f"metrics/wnut17/{row}.json" in COMMANDS["wnut17-evaluate"]["outputs"]
    workflow = PROJECT["workflows"]["wnut17"]
    for seed in (1, 2):
        assert workflow.index(f"wnut17-train-{row}_seed{seed}") < workflow.index("wnut17-evaluate-seeds")
        evaluation = (f"mgkd evaluate training/wnut17/{row}_seed{seed}/model-best corpus/wnut17/test.spacy "
                      f"--output metrics/wnut17/{row}_seed{seed}.json --gpu-id ${{vars.gpu_id}}")
        assert evaluation in COMMANDS["wnut17-evaluate-seeds"]["script"], seed


@pytest.mark.parametrize("row", ["te_da_seq", "te_da_token_em"])
def test_wnut17_trains_the_da_students_longer(row):
    """The WNUT-17 DA students' dev F1 still rose at vars.student_steps, so wnut17-train-<row>_da30k_steps (and its
    _seed1) train each with vars.da30k_steps: the main command with only the steps and output changed, evaluated."""
    (main,) = COMMANDS[f"wnut17-train-{row}"]["script"]
    assert "--training.max_steps ${vars.student_steps}" in main
    longer = f"{row}_da30k_steps"
    expected = (main.replace(f"training/wnut17/{row} ", f"training/wnut17/{longer} ")
                .replace("${vars.student_steps}", "${vars.da30k_steps}"))
    assert COMMANDS[f"wnut17-train-{longer}"]["script"] == [expected]
    workflow = PROJECT["workflows"]["wnut17"]
    for name in (longer, f"{longer}_seed1"):
        assert f"training/wnut17/{name}/model-best" in COMMANDS["wnut17-evaluate-da30k_steps"]["deps"]
        assert f"metrics/wnut17/{name}.json" in COMMANDS["wnut17-evaluate-da30k_steps"]["outputs"]
        assert workflow.index(f"wnut17-train-{name}") < workflow.index("wnut17-evaluate-da30k_steps")
    assert PROJECT["vars"]["da30k_steps"] > PROJECT["vars"]["student_steps"]
    assert workflow.index("wnut17-evaluate-da30k_steps") < workflow.index("wnut17-report")


def test_the_30k_da_point_is_te_da_seq_with_the_other_20k_annotated_sentences():
    """Figure 5's 30,000 point is train-te_da_seq (annotate's shard 0/3, 10,000 sentences) with the 20,000 of
    annotate-unlabeled-rest added (and again with vars.da30k_steps steps); `all` annotates those before training
    them, and the report puts te_da_seq at 10,000."""
    (main,) = COMMANDS["train-te_da_seq"]["script"]
    expected = (main.replace("training/conll2003/te_da_seq ", "training/conll2003/da30000 ")
                .replace('["annotations/conll2003/unlabeled"]',
                         '["annotations/conll2003/unlabeled", "annotations/conll2003/unlabeled_rest"]'))
    assert COMMANDS["train-da30000"]["script"] == [expected]
    longer = (expected.replace("training/conll2003/da30000 ", "training/conll2003/da30000_steps ")
              .replace("${vars.student_steps}", "${vars.da30k_steps}"))
    assert COMMANDS["train-da30000_steps"]["script"] == [longer]
    shards = {line.split("--shard ")[1].split()[0]: (name, line.split()[4])
              for name in ("annotate", "annotate-unlabeled-rest") for line in COMMANDS[name]["script"] if "--shard" in line}
    assert shards == {"0/3": ("annotate", "annotations/conll2003/unlabeled"),
                      "1/3": ("annotate-unlabeled-rest", "annotations/conll2003/unlabeled_rest"),
                      "2/3": ("annotate-unlabeled-rest", "annotations/conll2003/unlabeled_rest")}
    steps = PROJECT["workflows"]["all"]
    assert (steps.index("annotate") < steps.index("annotate-unlabeled-rest") < steps.index("train-da30000")
            < steps.index("train-da30000_steps") < steps.index("evaluate"))
    assert "metrics/conll2003/da30000_steps.json" in COMMANDS["evaluate"]["outputs"]
    assert "train-da10000" not in COMMANDS
    (report,) = COMMANDS["report"]["script"]
    assert "--unlabeled-all 10000" in report


def test_mpnet_speed_times_pipelines_that_all_and_mpnet_train_as_its_deps_declare():
    """``mpnet-speed`` (Table 4 with both teachers) times exactly its deps, every one of them a pipeline that a
    command of `all` or `mpnet` outputs (including both teachers and the CNN peer), and writes a speed*.json
    that `report` (the next step of `mpnet`) renders."""
    (line,) = COMMANDS["mpnet-speed"]["script"]
    words = line.split()
    models = words[2:words.index("--data")]
    assert models == COMMANDS["mpnet-speed"]["deps"]
    produced = {output for name in PROJECT["workflows"]["all"] + PROJECT["workflows"]["mpnet"]
                for output in COMMANDS[name].get("outputs", [])}
    assert set(models) <= produced
    assert {"training/conll2003/teacher/model-best", "training/conll2003/teacher_mpnet/model-best",
            "training/conll2003/peer_spacy_cnn/model-best"} <= set(models)
    output = words[words.index("--output") + 1]
    assert COMMANDS["mpnet-speed"]["outputs"] == [output] and Path(output).name.startswith("speed")
    assert PROJECT["workflows"]["mpnet"][-2:] == ["mpnet-speed", "report"]
    assert "metrics/conll2003" in COMMANDS["report"]["deps"] and Path(output).parent.as_posix() == "metrics/conll2003"
