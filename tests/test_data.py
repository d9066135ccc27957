"FewCLUE loaders: bad input named by file and line, counts equal shared/fewclue/README.md, data_samples round trip."
import json, re
from collections import Counter
from pathlib import Path
import pytest
from fewkit.core import FewkitDataError, find_shared, data_samples
from fewkit import data as fd
from fewkit import data_check as fdc
from fewkit import corpora
from fewkit.doors.data import cli_main

SAMPLES = data_samples() / "fewclue"
GOOD = '{"id": 0, "sentence": "物流很快", "label": "Positive"}'


def _task_dir(tmp_path, task="eprstmt", **files):
    d = tmp_path / task; d.mkdir(parents=True)
    for name, text in files.items(): (d / f"{name}.json").write_bytes(text.encode("utf-8"))
    return tmp_path


def _raises(root, task, split, line, expected):
    with pytest.raises(FewkitDataError) as e: fd.load_fewclue(task, split, root)
    err = e.value
    assert Path(err.path).name == f"{split}.json" and err.line == line, str(err)
    assert expected in err.expected, str(err)
    assert f"{split}.json:{line}: expected" in str(err)


# --- bad input: one test per kind ------------------------------------------------------------
def test_malformed_json_line(tmp_path):
    root = _task_dir(tmp_path, train_0=GOOD + "\r\n" + '{"id": 1, "sentence": "差", "label": "Negative"\r\n')
    _raises(root, "eprstmt", "train_0", 2, "one JSON object per line")


def test_blank_line_is_an_error_not_skipped(tmp_path):
    root = _task_dir(tmp_path, dev_0=GOOD + "\n\n" + GOOD + "\n")
    _raises(root, "eprstmt", "dev_0", 2, "one JSON object per line")


def test_missing_key(tmp_path):
    root = _task_dir(tmp_path, "bustm", train_0='{"id": 0, "sentence1": "开灯", "sentence2": "把灯打开", "label": "1"}\n'
                                              '{"id": 1, "sentence1": "关灯", "label": "0"}\n')
    _raises(root, "bustm", "train_0", 2, "key 'sentence2'")


def test_missing_label_key_in_a_labelled_split(tmp_path):
    root = _task_dir(tmp_path, test_public=GOOD + "\n" + '{"id": 1, "sentence": "差"}\n')
    _raises(root, "eprstmt", "test_public", 2, "key 'label'")


def test_unknown_label(tmp_path):
    root = _task_dir(tmp_path, train_0=GOOD + "\n" + '{"id": 1, "sentence": "差", "label": "negative"}\n')
    _raises(root, "eprstmt", "train_0", 2, "a eprstmt label")


def test_unknown_integer_label_tnews(tmp_path):
    m = '{"label": "100", "label_desc": "news_story","label_zh":"故事"}'
    root = _task_dir(tmp_path, "tnews", label_index2en2zh=m,
                     train_0='{"label": 105, "label_desc": "x", "sentence": "标题", "keywords": "", "id": 1}\n')
    _raises(root, "tnews", "train_0", 1, "a tnews label")


def test_empty_text_field(tmp_path):
    root = _task_dir(tmp_path, train_0=GOOD + "\n" + GOOD + "\n" + '{"id": 2, "sentence": "  ", "label": "Negative"}\n')
    _raises(root, "eprstmt", "train_0", 3, "a non-empty string in 'sentence'")


def test_not_utf8(tmp_path):
    root = _task_dir(tmp_path)
    (root / "eprstmt" / "train_0.json").write_bytes(GOOD.encode() + b"\n" + "好".encode("gbk") + b"\n")
    _raises(root, "eprstmt", "train_0", 2, "UTF-8")


def test_missing_split_names_path_and_lists_files(tmp_path):
    root = _task_dir(tmp_path, train_0=GOOD + "\n")
    with pytest.raises(FewkitDataError) as e: fd.load_fewclue("eprstmt", "unlabeled", root)
    assert e.value.path.endswith("eprstmt/unlabeled.json") and "train_0.json" in str(e.value)


def test_quirks_crlf_u2028_int_labels_empty_file(tmp_path):
    root = _task_dir(tmp_path, "iflytek", train_0='{"label": 8, "label_des": "公共交通", "sentence": "甲\u2028乙", "id": 3}\r\n')
    (root / "iflytek" / "label_maps.derived.json").write_text(json.dumps({"iflytek_labels": {"公共交通": 8}}))
    [e] = fd.load_fewclue("iflytek", "train_0", root)
    assert (e.text_a, e.label, e.extra) == ("甲\u2028乙", "8", {"label_des": "公共交通", "id": 3})
    root2 = _task_dir(tmp_path / "b", "cluewsc", unlabeled="")
    assert fd.load_fewclue("cluewsc", "unlabeled", root2) == []


def test_cli_broken_file_exits_nonzero_naming_file_and_line(tmp_path, capsys):
    root = _task_dir(tmp_path, train_0=GOOD + "\n" + GOOD + "\n" + '{"id": 2, "sentence": }\n')
    assert cli_main(["check", "--root", str(root), "--task", "eprstmt"]) == 1
    assert "eprstmt/train_0.json:3: expected" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e: cli_main(["check", "--help"])
    assert e.value.code == 0 and "--root" in capsys.readouterr().out


# --- duplicates are reported, with line numbers -------------------------------------------
def test_find_duplicates_ignores_id(tmp_path):
    other = '{"id": 1, "sentence": "差评", "label": "Negative"}'
    root = _task_dir(tmp_path, train_few_all="\r\n".join([GOOD, other, GOOD.replace('"id": 0', '"id": 2')]) + "\r\n")
    p = root / "eprstmt" / "train_few_all.json"
    assert fdc.find_duplicates(p) == [[1, 3]]
    assert fdc.find_duplicates(fd.load_fewclue("eprstmt", "train_few_all", root)) == [[1, 3]]
    assert len(fd.load_fewclue("eprstmt", "train_few_all", root)) == 3   # reported, not dropped


# --- acceptance: line and byte counts equal those in shared/fewclue/README.md --------------
def _readme_counts(readme: Path) -> dict:
    "{(task, split): (lines, bytes)} from the per-task tables of the README."
    out, task = {}, None
    for line in readme.read_text(encoding="utf-8").split("\n"):
        m = re.match(r"^### (\w+)\s*$", line)
        if m: task = m.group(1); continue
        m = re.match(r"^\| (\w+)\.json \| (\d+) \| (\d+) \|$", line)
        if task and m and m.group(1) in fd.SPLITS: out[task, m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


@pytest.mark.skipif(find_shared("fewclue") is None, reason="shared/fewclue is absent")
def test_check_counts_equal_readme():
    root = find_shared("fewclue")
    want = _readme_counts(root / "README.md")
    assert len(want) >= 9 * 12 and {t for t, _ in want} == set(fd.FEWCLUE_TASKS)
    rep = fdc.check_fewclue(root)
    assert rep["problems"] == []
    got = {(t, s): (r["lines"], r["bytes"]) for t, tr in rep["tasks"].items() for s, r in tr["splits"].items()}
    assert got == want
    # the README's own observations, rederived
    few = rep["tasks"]["eprstmt"]["splits"]["train_few_all"]
    assert few["lines"] - sum(len(g) - 1 for g in few["duplicates"]) == 131
    assert sorted(t for t, tr in rep["tasks"].items() if "unlabeled" in tr["missing"]) == ["csl", "csldcp", "iflytek", "ocnli"]
    assert len(rep["tasks"]["iflytek"]["splits"]["dev_0"]["labels"]) == 117
    assert len(fd.task_info("iflytek", root).labels) == 119 and len(fd.task_info("csldcp", root).labels) == 67
    assert len(fd.task_info("tnews", root).labels) == 15


# --- data_samples round trip ---------------------------------------------------------------
@pytest.mark.parametrize("task", fd.FEWCLUE_TASKS)
def test_samples_round_trip(task):
    d = SAMPLES / task
    for split in ("train_0", "dev_0", "train_few_all", "dev_few_all", "unlabeled", "test_public", "test"):
        p = d / f"{split}.json"
        if task == "cluewsc" and split == "unlabeled": assert p.stat().st_size == 0
        ex = fd.load_fewclue(task, split, SAMPLES)
        objs = [o for _, o in fd.read_jsonl(p)]
        assert [fd.to_fewclue(e) for e in ex] == objs          # nothing lost or changed
        assert [e.idx for e in ex] == list(range(len(objs)))
        if split in fd.UNLABELED_SPLITS: assert all(e.label is None for e in ex)
        else:
            assert 4 <= len(ex) <= 8
            labels = fd.task_info(task, SAMPLES).labels
            assert all(isinstance(e.label, str) and e.label in labels for e in ex)
        crlf = p.read_bytes().count(b"\r\n")
        want_crlf = task in {"eprstmt", "ocnli", "bustm", "csl", "cluewsc"} and split not in fd.UNLABELED_SPLITS
        assert crlf == (len(objs) if want_crlf else 0), (task, split)


def test_samples_quirks():
    assert any("\u2028" in e.text_a for e in fd.load_fewclue("iflytek", "train_0", SAMPLES))
    assert fdc.find_duplicates(SAMPLES / "eprstmt" / "train_few_all.json") == [[1, 5]]
    assert isinstance(json.loads((SAMPLES / "tnews" / "train_0.json").read_text().split("\n")[0])["label"], int)
    rep = fdc.check_fewclue(SAMPLES, splits=[0])   # data_samples holds split 0 only
    assert rep["problems"] == [] and set(rep["tasks"]) == set(fd.FEWCLUE_TASKS)
    full = fdc.check_fewclue(SAMPLES)               # the 5-split protocol: splits 1-4 are missing there
    assert len(full["problems"]) == 9 * 8 and all("split" in p and "missing file" in p for p in full["problems"])


def test_fewclue_root_fallback(monkeypatch):
    monkeypatch.setattr(fd, "find_shared", lambda sub="": None)
    assert fd.fewclue_root() == SAMPLES


# --- embedded corpora ------------------------------------------------------------------------
def test_pd_line_parser():
    r = corpora.parse_pd_line("新华社/nt  记者/n  王/nr  小明/nr  在/p  [北京/ns  大学/n]nt  说/v  ：/w  “/w  好/a  。/w  ”/w  完/v  ！/w")
    (s, sp), (s2, sp2) = r
    assert s == "新华社记者王小明在北京大学说：“好。”" and s2 == "完！" and sp2 == []
    assert [(s[a:b], t) for a, b, t in sp] == [("新华社", "nt"), ("王小明", "nr"), ("北京大学", "nt")]
    with pytest.raises(FewkitDataError, match="f.txt:9"): corpora.parse_pd_line("好/a  坏", "f.txt", 9)


def test_review_task_seeded_and_disjoint():
    a, b = corpora.review_task(seed=3), corpora.review_task(seed=3)
    assert [e.text_a for e in a["train"]] == [e.text_a for e in b["train"]]
    assert Counter(e.label for e in a["train"]) == Counter(Positive=16, Negative=16)
    assert Counter(e.label for e in a["dev"]) == Counter(Positive=16, Negative=16)
    texts = [e.text_a for v in a.values() for e in v]
    assert len(texts) == len(set(texts)) == sum(corpora.review_stats()["kept"].values())
    assert corpora.review_stats()["in_both_files"] > 0
    assert fd.review_task is corpora.review_task   # the contract name lives in fewkit.data too


def test_chid_answer_outside_candidates(tmp_path):
    # FewCLUE chid lines hold 7 different candidates (2 are now refused), so the index must pass 6 to fall outside
    cands = '["一心一意", "半途而废", "守株待兔", "画蛇添足", "井底之蛙", "亡羊补牢", "对牛弹琴"]'
    line = '{"id": 1, "candidates": %s, "content": "他学画总是#idiom#。", "answer": %%d}\n' % cands
    root = _task_dir(tmp_path, "chid", train_0=line % 1 + line % 7)
    _raises(root, "chid", "train_0", 2, "an answer index into 'candidates'")
    assert fd.load_fewclue("chid", "dev_0", _task_dir(tmp_path / "ok", "chid", dev_0=line % 1))[0].label == "1"


def test_chid_two_candidates_refused(tmp_path):
    line = '{"id": 1, "candidates": ["一心一意", "半途而废"], "content": "他学画总是#idiom#。", "answer": 1}\n'
    _raises(_task_dir(tmp_path, "chid", train_0=line), "chid", "train_0", 1, "'candidates': a list of 7 idioms")


def test_protocol_needs_all_five_splits_unless_named(tmp_path):
    with pytest.raises(FewkitDataError) as e: fd.protocol_splits("eprstmt", SAMPLES)
    assert e.value.path.endswith("eprstmt/train_1.json") and "--splits" in str(e.value)
    assert fd.protocol_splits("eprstmt", SAMPLES, [0]) == [0]
    assert [len(x) for x in fd.load_protocol("eprstmt", SAMPLES, [0])[0]] == [4, 4]
