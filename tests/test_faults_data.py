"""Fault injection on FewCLUE data (issue 14, item 2): every corrupted input gives a FewkitDataError naming the
file, the line (where there is one) and what was expected, and `fewkit data check` exits non-zero on it.

Each case copies one task folder of the real data (../shared/fewclue, else data_samples/fewclue) into tmp_path,
breaks one thing and loads it. Nothing is copied into the repository."""
import json, os, shutil
from pathlib import Path
import pytest
from fewkit.core import FewkitDataError, find_shared, data_samples
from fewkit import data as fd

# FEWKIT_FAULT_SRC=data_samples/fewclue runs the suite on the samples even where ../shared exists
SRC = Path(os.environ.get("FEWKIT_FAULT_SRC") or find_shared("fewclue") or data_samples() / "fewclue")
SPLITS = None if (SRC / "eprstmt" / "train_4.json").exists() else [0]  # data_samples holds split 0 only
KEEP = ("train_", "dev_", "label", "labels_all")  # the protocol files and label maps (unlabeled: large, optional)


def _copy(tmp_path: Path, task: str) -> Path:
    "A FewCLUE root in tmp_path holding a copy of `task`'s protocol files and label maps."
    dst = tmp_path / "fewclue" / task
    dst.mkdir(parents=True)
    for p in (SRC / task).iterdir():
        if p.name.startswith(KEEP) and "few_all" not in p.name:
            shutil.copyfile(p, dst / p.name)
    return dst.parent


def _lines(p: Path) -> list[str]:
    "The file's lines split on '\\n' only (a '\\r' stays with its line)."
    t = p.read_text(encoding="utf-8").split("\n")
    return t[:-1] if t[-1] == "" else t


def _edit_line(p: Path, n: int, fn) -> None:
    "Replace line n (1-based) of a JSON Lines file by fn(object) (an object, dumped) or fn(raw line) (a str)."
    ls = _lines(p)
    cr = "\r" if ls[n - 1].endswith("\r") else ""
    try:
        new = fn(json.loads(ls[n - 1]))
    except (TypeError, AttributeError, KeyError):
        new = fn(ls[n - 1].rstrip("\r"))
    ls[n - 1] = (new if isinstance(new, str) else json.dumps(new, ensure_ascii=False)) + cr
    p.write_text("\n".join(ls) + "\n", encoding="utf-8")


def _raw(fn):
    "Mark an edit that works on the raw text of a line."
    def edit(v):
        if not isinstance(v, str):
            raise TypeError
        return fn(v)
    return edit


def _test_file(split: str, dup_id: bool, drop_id: bool = False):
    "Build test.json / test_public.json of a task from its dev_0 lines (ids duplicated or dropped on line 3)."
    def build(root: Path, task: str):
        d = root / task
        objs = [json.loads(l) for l in _lines(d / "dev_0.json")]
        key = "idx" if task == "cluewsc" else "id"
        for i, o in enumerate(objs):
            o[key] = 1000 + i
            if split == "test":
                o.pop(fd._SPEC[task][2])
        if dup_id:
            objs[2][key] = objs[0][key]
        if drop_id:
            del objs[2][key]
        (d / f"{split}.json").write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
        return d / f"{split}.json"
    return build


def _other_desc(o):
    "tnews: a label_desc that belongs to another label."
    o["label_desc"] = "news_car" if o["label_desc"] != "news_car" else "news_story"
    return o


def _other_des(o):
    o["label_des"] = o["label_des"] + "类"
    return o


def _cands(fn):
    def edit(o):
        o["candidates"] = fn(o["candidates"])
        return o
    return edit


def _target(fn):
    def edit(o):
        fn(o["target"])
        return o
    return edit


def _wrong_text(t, s):
    t[f"{s}_text"] = "并不在此" if t[f"{s}_text"] != "并不在此" else "别处"


# (id, task, file to break, line, edit, what the message must say). edit: fn(object|raw line) for `line`,
# or fn(root, task) -> the file that must be named, for whole-file faults.
CASES = [
    # raw tracebacks before (issue 14)
    ("empty_train_0", "eprstmt", "train_0.json", None, lambda r, t: _empty(r / t / "train_0.json"), "at least one eprstmt record"),
    ("empty_dev_0", "eprstmt", "dev_0.json", None, lambda r, t: _empty(r / t / "dev_0.json"), "at least one eprstmt record"),
    ("chid_6_candidates", "chid", "train_0.json", 3, _cands(lambda c: c[:6]), "a list of 7 idioms"),
    ("chid_integer_candidates", "chid", "train_0.json", 3, _cands(lambda c: list(range(7))), "a list of 7 idioms"),
    ("cluewsc_target_empty", "cluewsc", "train_0.json", 2, lambda o: {**o, "target": {}}, "target.span1_index"),
    ("cluewsc_string_span_index", "cluewsc", "dev_0.json", 2,
     _target(lambda t: t.update(span1_index=str(t["span1_index"]))), "an integer character offset"),
    ("lone_surrogate", "eprstmt", "train_0.json", 2,
     _raw(lambda l: l.replace('"sentence": "', '"sentence": "\\ud800', 1)), "lone surrogate"),
    ("directory_train_0", "eprstmt", "train_0.json", None, lambda r, t: _dir(r / t / "train_0.json"), "a directory"),
    ("deep_nesting_parse", "bustm", "train_0.json", 2,
     _raw(lambda l: l[:-1] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}"), "nested at most"),
    ("deep_nesting", "bustm", "dev_0.json", 3, _raw(lambda l: l[:-1] + ', "x": ' + "[" * 30 + "]" * 30 + "}"), "nested at most"),
    ("tnews_map_garbage", "tnews", "label_index2en2zh.json", 1,
     lambda r, t: _write(r / t / "label_index2en2zh.json", "<html>not a label map</html>\n"), "one JSON object per line"),
    ("tnews_map_row_incomplete", "tnews", "label_index2en2zh.json", 3,
     lambda o: {"label": o["label"], "label_desc": o["label_desc"]}, "'label_zh'"),
    ("tnews_map_duplicate_label", "tnews", "label_index2en2zh.json", 2, lambda o: {**o, "label": "100"}, "each tnews label once"),
    ("iflytek_map_garbage", "iflytek", "label_maps.derived.json", 2,
     lambda r, t: _write(r / t / "label_maps.derived.json", '{"iflytek_labels": {"打车": 0,\n'), "a JSON object of label maps"),
    ("iflytek_map_list", "iflytek", "label_maps.derived.json", None,
     lambda r, t: _write(r / t / "label_maps.derived.json", "[1, 2, 3]\n"), "a JSON object with"),
    ("iflytek_map_incomplete_tags", "iflytek", "label_maps.derived.json", None,
     lambda r, t: _json_edit(r / t / "label_maps.derived.json", lambda m: m["label_des2tag"].popitem()), "a tag for every label"),
    ("iflytek_map_string_id", "iflytek", "label_maps.derived.json", None,
     lambda r, t: _json_edit(r / t / "label_maps.derived.json", lambda m: m["iflytek_labels"].update(打车="0")), "label name -> int"),
    ("iflytek_map_missing_key", "iflytek", "label_maps.derived.json", None,
     lambda r, t: _json_edit(r / t / "label_maps.derived.json", lambda m: m.pop("iflytek_labels")), "'iflytek_labels'"),
    ("csldcp_labels_not_utf8", "csldcp", "labels_all.txt", 1,
     lambda r, t: (r / t / "labels_all.txt").write_bytes("材料科学".encode("gbk") + b"\n"), "UTF-8 text"),
    ("csldcp_labels_duplicate", "csldcp", "labels_all.txt", 2,
     lambda r, t: _dup_first_line(r / t / "labels_all.txt"), "each once"),
    ("csldcp_tags_garbage", "csldcp", "label_des2tag.derived.json", 1,
     lambda r, t: _write(r / t / "label_des2tag.derived.json", "not json"), "a JSON object of label maps"),
    ("csldcp_tags_incomplete", "csldcp", "label_des2tag.derived.json", None,
     lambda r, t: _json_edit(r / t / "label_des2tag.derived.json", lambda m: m["label_des2tag"].popitem()), "a tag for every label"),
    ("label_map_missing", "tnews", "label_index2en2zh.json", None,
     lambda r, t: (r / t / "label_index2en2zh.json").unlink(), "the tnews label map"),
    # silently accepted before
    ("duplicate_key", "eprstmt", "dev_0.json", 4, _raw(lambda l: '{"label": "Positive", ' + l[1:]), "key 'label' twice"),
    ("tnews_label_desc_contradicts_label", "tnews", "train_0.json", 2, _other_desc, "label_desc"),
    ("iflytek_label_des_contradicts_label", "iflytek", "dev_0.json", 2, _other_des, "label_des"),
    ("chid_two_blanks", "chid", "dev_0.json", 4, lambda o: {**o, "content": o["content"] + "#idiom#"}, "exactly one blank"),
    ("chid_identical_candidates", "chid", "train_0.json", 4, _cands(lambda c: [c[0]] + c[:6]), "7 different candidate idioms"),
    ("chid_answer_as_string", "chid", "train_0.json", 2, lambda o: {**o, "answer": str(o["answer"])}, "an answer index"),
    ("cluewsc_span1_not_in_text", "cluewsc", "train_0.json", 3, _target(lambda t: _wrong_text(t, "span1")), "target.span1_text"),
    ("cluewsc_span2_not_in_text", "cluewsc", "dev_0.json", 4, _target(lambda t: _wrong_text(t, "span2")), "target.span2_text"),
    ("cluewsc_span_index_past_text", "cluewsc", "train_0.json", 4, _target(lambda t: t.update(span2_index=10**6)), "target.span2_text"),
    ("test_duplicate_ids", "eprstmt", "test.json", 3, None, "a different id on every line of test"),
    ("test_public_duplicate_ids", "cluewsc", "test_public.json", 3, None, "a different id on every line of test_public"),
    ("test_missing_id", "bustm", "test.json", 3, None, "an 'id' (cluewsc: 'idx') on every line of test"),
]
SPECIAL = {  # whole-file builders of the test files
    "test_duplicate_ids": _test_file("test", True),
    "test_public_duplicate_ids": _test_file("test_public", True),
    "test_missing_id": _test_file("test", False, True),
}


def _empty(p: Path):
    p.write_bytes(b"")


def _dir(p: Path):
    p.unlink()
    p.mkdir()


def _write(p: Path, text: str):
    p.write_text(text, encoding="utf-8")


def _json_edit(p: Path, fn):
    m = json.loads(p.read_text(encoding="utf-8"))
    fn(m)
    _write(p, json.dumps(m, ensure_ascii=False))


def _dup_first_line(p: Path):
    ls = _lines(p)
    _write(p, "\n".join([ls[0], ls[0], *ls[1:]]) + "\n")


def _split_of(fname: str) -> str | None:
    s = fname[: -len(".json")] if fname.endswith(".json") else None
    return s if s in fd.SPLITS else None


def _break(tmp_path: Path, case) -> tuple[Path, str]:
    "Build the broken root; return (root, the split to load, or '' for a label-map fault)."
    cid, task, fname, line, edit, _ = case
    root = _copy(tmp_path, task)
    if cid in SPECIAL:
        SPECIAL[cid](root, task)
    elif edit.__code__.co_argcount == 2:  # a whole-file fault: edit(root, task)
        edit(root, task)
    else:
        _edit_line(root / task / fname, line, edit)
    split = _split_of(fname)
    return root, split or "train_0"


def _load(root: Path, task: str, split: str):
    "What a user's run does: the label set, then the split."
    fd.task_info(task, root)
    return fd.load_fewclue(task, split, root)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_data_is_a_clear_error(tmp_path, case, capsys):
    from fewkit.doors.data import cli_main

    cid, task, fname, line, _, want = case
    root, split = _break(tmp_path, case)
    with pytest.raises(FewkitDataError) as e:
        _load(root, task, split)
    err = e.value
    assert Path(err.path).name == fname and err.line == line, str(err)
    assert (f"{fname}:{line}: expected" if line else f"{fname}: expected") in str(err)
    assert want in str(err), str(err)
    args = ["check", "--root", str(root), "--task", task] + (["--splits", "0"] if SPLITS else [])
    assert cli_main(args) == 1
    assert f"{fname}" in capsys.readouterr().err


@pytest.mark.parametrize("gone", ["train_0", "dev_0"])
def test_missing_protocol_split_is_an_error_unless_named(tmp_path, gone, capsys):
    from fewkit.doors.data import cli_main

    root = _copy(tmp_path, "bustm")
    (root / "bustm" / f"{gone}.json").unlink()
    with pytest.raises(FewkitDataError) as e:
        fd.load_protocol("bustm", root, SPLITS)
    assert Path(e.value.path).name == f"{gone}.json" and "missing file" in str(e.value)
    assert cli_main(["check", "--root", str(root), "--task", "bustm"] + (["--splits", "0"] if SPLITS else [])) == 1
    assert f"{gone}.json: expected the {gone} split" in capsys.readouterr().err
    if SPLITS is None:  # naming the other splits is allowed
        assert sorted(fd.load_protocol("bustm", root, [1, 2, 3, 4])) == [1, 2, 3, 4]
        assert cli_main(["check", "--root", str(root), "--task", "bustm", "--splits", "1,2,3,4"]) == 0


def test_task_folder_in_upper_case(tmp_path, capsys):
    from fewkit.doors.data import cli_main

    root = _copy(tmp_path, "bustm")
    (root / "bustm").rename(root / "BUSTM")
    assert cli_main(["check", "--root", str(root), "--task", "bustm"]) == 1
    assert "found 'BUSTM'" in capsys.readouterr().err
    with pytest.raises(FewkitDataError):
        fd.load_fewclue("bustm", "train_0", root)


def test_clean_copy_checks_clean(tmp_path):
    "The copies themselves are fine: every fault above is the one edit, not the copy."
    from fewkit.doors.data import cli_main

    for task in sorted({c[1] for c in CASES}):
        root = _copy(tmp_path / task, task)
        assert cli_main(["check", "--root", str(root), "--task", task] + (["--splits", "0"] if SPLITS else [])) == 0
