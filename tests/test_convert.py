"""Corpus converters on the real data (../shared/data) and the asset fetcher on tiny tmp projects."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import srsly
from spacy.tokens import DocBin

from mgkd_spacy.cli import convert as cv
from mgkd_spacy.cli.fetch import fetch_assets

ROOT = Path(__file__).parents[1]
DATA = ROOT.parent / "shared" / "data"
SPLITS = ("train", "dev", "test")


def data(dataset: str) -> Path:
    path = DATA / dataset
    if not path.exists():
        pytest.skip(f"data mirror {path} not present")
    return path


def load(path: Path):
    return list(DocBin().from_disk(path).get_docs(spacy.blank("xx").vocab))


def assert_valid_ents(docs, labels):
    for doc in docs:
        taken = set()
        for ent in doc.ents:
            assert ent.label_ in labels
            assert len(ent) > 0 and taken.isdisjoint(range(ent.start, ent.end))
            taken.update(range(ent.start, ent.end))


def assert_readme_counts(dataset, output_dir, splits=SPLITS):
    for split in splits:
        docs = load(output_dir / f"{split}.spacy")
        expected = cv.EXPECTED[(dataset, split)]
        assert cv.count_docs(docs) == expected
        assert_valid_ents(docs, set(expected.ents))


# --- tag chunking ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags,chunks",
    [
        (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]),  # IOB1
        (["B-X", "I-X", "I-Y", "O"], [("X", 0, 2), ("Y", 2, 3)]),  # IOB2 with a type change
        (["B-X", "M-X", "E-X", "S-Y", "B-Z", "E-Z"], [("X", 0, 3), ("Y", 3, 4), ("Z", 4, 6)]),  # BMES
        (["E-X", "B-Y", "M-Y"], [("X", 0, 1), ("Y", 1, 3)]),  # ill-formed BMES: read, not rejected
    ],
)
def test_chunk_tags(tags, chunks):
    assert cv.chunk_tags(tags) == chunks


# --- labeled corpora against the README counts -----------------------------------------------------------------


def test_conll2003(tmp_path):
    counts = cv.convert_conll2003(data("conll2003"), tmp_path)
    assert {s: c.n_ents for s, c in counts.items()} == {"train": 23499, "dev": 5942, "test": 5648}
    assert_readme_counts("conll2003", tmp_path)
    assert all(t.text != "-DOCSTART-" for doc in load(tmp_path / "test.spacy") for t in doc)


def test_conll2003_documents(tmp_path):
    cv.convert_conll2003(data("conll2003"), tmp_path, n_sents=0)
    assert len(load(tmp_path / "dev.spacy")) == 216  # README: 216 dev documents


def test_wnut17(tmp_path):
    cv.convert_wnut17(data("wnut17"), tmp_path)
    assert_readme_counts("wnut17", tmp_path)


def test_weibo(tmp_path):
    cv.convert_weibo(data("weibo"), tmp_path)
    assert_readme_counts("weibo", tmp_path)
    docs = load(tmp_path / "train.spacy")
    assert not any(t.text[-1].isdigit() and len(t.text) > 1 for doc in docs for t in doc)
    assert docs[0][0].text == "科" and docs[0].text == "".join(t.text for t in docs[0])  # 科0 -> 科, no spaces
    assert cv.weibo_char("10") == "1" and cv.weibo_char("\ufffd\ufffd0") == "\ufffd\ufffd"


def test_weibo_named_only(tmp_path):
    counts = cv.convert_weibo(data("weibo"), tmp_path, named_only=True)
    assert counts["train"].n_ents == 205 + 56 + 183 + 578 and not any(k.endswith(".NOM") for k in counts["train"].ents)


def test_resume(tmp_path):
    cv.convert_resume(data("resume"), tmp_path)
    assert_readme_counts("resume", tmp_path)
    doc = load(tmp_path / "train.spacy")[0]
    # the file starts "高 B-NAME / 勇 E-NAME": one two-character NAME entity
    assert [(e.text, e.label_) for e in doc.ents][0] == ("高勇", "NAME")


def test_msra(tmp_path):
    counts = cv.convert_msra(data("msra"), tmp_path, dev_fraction=0.05, seed=0)
    assert counts["train"] + counts["dev"] == cv.EXPECTED[("msra", "train")]
    assert counts["test"] == cv.EXPECTED[("msra", "test")]
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["n_dev"] == len(split["dev_sentence_indices"]) == round(50658 * 0.05) == counts["dev"].docs
    assert_valid_ents(load(tmp_path / "dev.spacy"), {"PER", "ORG", "LOC"})


def test_msra_limit_is_reproducible(tmp_path):
    cv.convert_msra(data("msra"), tmp_path / "a", limit=400, seed=3)
    cv.convert_msra(data("msra"), tmp_path / "b", limit=400, seed=3)
    a, b = (json.loads((tmp_path / d / "split.json").read_text()) for d in "ab")
    assert a == b and a["n_train"] + a["n_dev"] == 400


def test_semeval(tmp_path):
    counts = cv.convert_semeval(data("semeval2016_absa_restaurants"), tmp_path, seed=0)
    assert counts["train"].docs + counts["dev"].docs == 2000 and counts["test"].docs == 676
    split = json.loads((tmp_path / "split.json").read_text())
    dropped = split["dropped_overlapping_spans"]
    assert counts["train"].n_ents + counts["dev"].n_ents + dropped["train"] == 1776
    assert counts["test"].n_ents + dropped["test"] == 612
    for name in SPLITS:
        assert_valid_ents(load(tmp_path / f"{name}.spacy"), {"ASPECT"})
    first = load(tmp_path / "train.spacy")[0]
    assert [e.text for e in first.ents] == ["place"]


def test_semeval_overlapping_targets_are_dropped(tmp_path):
    xml = ('<Reviews><Review rid="1"><sentences><sentence id="1:0"><text>The sea bass was great.</text><Opinions>'
           '<Opinion target="sea bass" from="4" to="12"/><Opinion target="bass" from="8" to="12"/>'
           '<Opinion target="sea bass" from="4" to="12"/><Opinion target="NULL" from="0" to="0"/>'
           '</Opinions></sentence></sentences></Review></Reviews>')
    (tmp_path / "t.xml").write_text(xml)
    docs, stats = cv.read_absa(tmp_path / "t.xml", spacy.blank("en"))
    assert [e.text for e in docs[0][1].ents] == ["sea bass"]
    assert (stats.aspect_terms, stats.dropped_overlap, stats.null_targets) == (2, 1, 1)


def test_count_mismatch_fails_loudly(tmp_path):
    src = tmp_path / "wnut"
    src.mkdir()
    for split in SPLITS:
        (src / f"{split}.conll").write_text("Paris\tB-location\nis\tO\n\n")
    with pytest.raises(cv.CountMismatch, match="wnut17/train"):
        cv.convert_wnut17(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written when the check fails
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert.py"), "wnut17", str(src), str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "differ from the data README" in result.stdout
    assert "Traceback" not in result.stderr
    counts = cv.convert_wnut17(src, tmp_path / "out", check=False)
    assert counts["dev"].ents == {"location": 1}


# --- unlabeled text ----------------------------------------------------------------------------------------------


def test_text_survives_bad_lines(tmp_path):
    path = tmp_path / "raw.txt"
    long_line = " ".join(f"w{i}" for i in range(5000))
    path.write_bytes(b"First sentence here .\n\n   \n" + long_line.encode() + b"\n"
                     b"Bell\x07 and\ttab and \x1b escape .\n" + b"bad \xff\xfe bytes .\n" + b"last line .")
    stats = cv.convert_text([path], tmp_path / "out.spacy", max_tokens=512)
    assert (stats.lines, stats.empty, stats.invalid_utf8, stats.control_chars, stats.split) == (5, 2, 1, 1, 1)
    docs = load(tmp_path / "out.spacy")
    assert stats.docs == len(docs) == 4 + 10  # the 5,000-token line becomes ceil(5000 / 512) = 10 docs
    assert max(len(d) for d in docs) == 512 and sum(len(d) for d in docs) == stats.tokens
    assert all(not d.ents for d in docs)
    assert "\ufffd" in docs[-2].text and "\x07" not in docs[-3].text


def test_text_limit_and_chars(tmp_path):
    path = tmp_path / "zh.txt"
    path.write_text("今天 天气好\n\n我们去北京\n第三行\n", encoding="utf8")
    stats = cv.convert_text([path], tmp_path / "out.spacy", lang="zh", chars=True, limit=2)
    docs = load(tmp_path / "out.spacy")
    assert stats.lines == 2 and [d.text for d in docs] == ["今天天气好", "我们去北京"] and len(docs[0]) == 5


def test_text_line_count_check(tmp_path):
    path = tmp_path / "posts.txt"
    path.write_text("one\ntwo\n")
    with pytest.raises(cv.CountMismatch, match="16712"):
        cv.convert_text([path], tmp_path / "out.spacy", dataset="unlabeled_weibo")


# --- fetch -------------------------------------------------------------------------------------------------------


def make_project(tmp_path: Path, content: bytes = b"Paris\tB-location\n", checksum=None, url=None) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    asset = {"dest": "assets/toy/train.conll", "description": "toy asset",
             "checksum": checksum or hashlib.md5(content).hexdigest()}
    if url:
        asset["url"] = url
    srsly.write_yaml(project / "project.yml", {"title": "toy", "vars": {"data_mirror": "../mirror"}, "assets": [asset]})
    mirror = tmp_path / "mirror" / "toy"
    mirror.mkdir(parents=True)
    (mirror / "train.conll").write_bytes(content)
    return project


def run_fetch(project: Path, *args: str, env_mirror=None):
    env = {"PATH": "/usr/bin:/bin", "MGKD_OFFLINE": "1"}
    if env_mirror is not None:
        env["MGKD_DATA_MIRROR"] = str(env_mirror)
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_assets.py"), "--project-dir", str(project), *args],
                          capture_output=True, text=True, env=env)


def test_fetch_copies_from_mirror_var(tmp_path, monkeypatch):
    monkeypatch.delenv("MGKD_DATA_MIRROR", raising=False)
    project = make_project(tmp_path)
    report = fetch_assets(project, offline=True)
    assert report.copied == ["assets/toy/train.conll"] and not report.missing
    assert (project / "assets/toy/train.conll").read_bytes() == b"Paris\tB-location\n"
    assert fetch_assets(project, offline=True).present == ["assets/toy/train.conll"]  # second run: skipped


def test_fetch_env_mirror_wins(tmp_path):
    project = make_project(tmp_path)
    result = run_fetch(project, env_mirror=tmp_path / "nowhere")
    assert result.returncode == 1 and str(tmp_path / "nowhere") in result.stdout


def test_fetch_wrong_md5_is_a_clear_error(tmp_path):
    project = make_project(tmp_path, checksum="0" * 32)
    result = run_fetch(project)
    assert result.returncode == 1
    assert "1 asset(s) missing" in result.stdout and "!= " + "0" * 32 in result.stdout
    assert not (project / "assets/toy/train.conll").exists() and "Traceback" not in result.stderr


def test_fetch_missing_offline_one_message(tmp_path):
    project = make_project(tmp_path, url="https://example.invalid/train.conll")
    result = run_fetch(project, "--mirror", str(tmp_path / "nowhere"), "--offline", env_mirror="")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert result.stdout.count("asset(s) missing") == 1
    assert "assets/toy/train.conll" in result.stdout and "offline" in result.stdout
    assert "MGKD_DATA_MIRROR" in result.stdout and "dest path" in result.stdout


def test_fetch_failed_download_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("MGKD_DATA_MIRROR", raising=False)
    project = make_project(tmp_path, url="http://127.0.0.1:9/train.conll")  # discard port: connection refused
    report = fetch_assets(project, mirror=tmp_path / "nowhere", offline=False, timeout=2)
    assert report.missing and "download from http://127.0.0.1:9/train.conll failed" in report.missing[0][1][-1]


def test_project_assets_have_checksums_and_match_the_mirror():
    config = srsly.read_yaml(ROOT / "project.yml")
    assert list(config)[:7] == ["title", "description", "vars", "directories", "assets", "workflows", "commands"]
    dests = {a["dest"] for a in config["assets"]}
    mirror_files = {f"assets/{p.parent.name}/{p.name}" for p in DATA.glob("*/*") if p.name != "README.md"}
    if DATA.exists():
        assert dests == mirror_files
    for asset in config["assets"]:
        assert asset["description"] and len(asset["checksum"]) == 32
        assert "url" not in asset or asset["url"].startswith("https://raw.githubusercontent.com/")
    names = {c["name"] for c in config["commands"]}
    assert all(step in names for step in config["workflows"]["corpora"])
