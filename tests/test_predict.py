"""sft-predict: texts (txt/tsv/csv/jsonl) and images (file/folder) -> predictions, GLUE file."""

import csv
import dataclasses
import io
import json
import logging
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import compose_config, logs_warning, run_entry_point
from inference_checkpoints import image_checkpoint, text_checkpoint
from omegaconf import OmegaConf
from PIL import Image

import sft.jobs.predict as predict_module
import sft.predict
from sft.data.readers.sst_trees import read_sst_trees
from sft.errors import SFTError
from sft.inference.bundle import check_inference_inputs, load_bundle
from sft.inference.inputs import STDIN, ImageInputs, TextInputs, read_texts
from sft.inference.predictor import predict_probs
from sft.inference.writers import glue_labels_of, write_glue_submission
from sft.jobs.export import export
from sft.jobs.predict import predict
from sft.jobs.train import train


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, data_dir):
    root = tmp_path_factory.getbasetemp() / "inference_ckpts"
    return {
        "image": image_checkpoint(root),
        "text": text_checkpoint(root),
        "image_lora": image_checkpoint(root, lora=True),
    }


def run_predict(ckpt, inputs, out_dir, *overrides):
    cfg = compose_config(
        "predict", [f"ckpt_path={ckpt}", f"inputs={inputs}", "device=cpu", *overrides], out_dir
    )
    return predict(cfg)


def test_the_predictions_line_is_in_predict_log_too(ckpts, tmp_path, data_dir, capsys):
    """It was printed only: predict.log stayed empty."""
    (tmp_path / "in.txt").write_text(dev_rows(data_dir, 1)[0][0] + "\n")
    argv = [f"ckpt_path={ckpts['text']}", f"inputs={tmp_path / 'in.txt'}", "device=cpu"]
    argv.append(f"hydra.run.dir={tmp_path / 'run'}")
    assert run_entry_point(sft.predict.main, ["sft-predict", *argv]) == 0
    line = f"predictions of 1 input: {tmp_path / 'run' / 'predictions.csv'}"
    assert line in capsys.readouterr().out
    assert line in (tmp_path / "run" / "predict.log").read_text()


def test_a_missing_checkpoints_error_line_is_in_predict_log_too(tmp_path, capsys):
    argv = [f"ckpt_path={tmp_path / 'none.ckpt'}", "inputs=x.txt"]
    argv.append(f"hydra.run.dir={tmp_path / 'run'}")
    assert run_entry_point(sft.predict.main, ["sft-predict", *argv]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and str(tmp_path / "none.ckpt") in line
    assert line in (tmp_path / "run" / "predict.log").read_text()


def read_csv(path):
    return list(csv.DictReader(path.open(newline="", encoding="utf-8")))


def dev_rows(data_dir, n):
    lines = (data_dir / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines[1 : n + 1]]  # sentence, label


def test_text_inputs_of_every_kind_match_the_training_pipeline(
    ckpts, data_dir, tmp_path, caplog, monkeypatch
):
    rows = dev_rows(data_dir, 5)
    sentences = [s for s, _ in rows]
    (tmp_path / "in.txt").write_text("\n".join([sentences[0], "", *sentences[1:]]) + "\n")
    with (tmp_path / "in.tsv").open("w") as f:
        f.write("index\tsentence\n" + "".join(f"{10 + i}\t{s}\n" for i, s in enumerate(sentences)))
    with (tmp_path / "in.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["review"], *[[s] for s in sentences]])
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"sentence": s}) + "\n" for s in sentences)
    )
    # datasets' Dataset.to_json writes JSON Lines into a .json file (was: an unknown kind)
    (tmp_path / "in.json").write_text((tmp_path / "in.jsonl").read_text())
    # `... | sft-predict inputs=-` (was: no such file), bytes as a pipe gives them, with a
    # byte-order mark as Windows tools write it (was: kept in the first text)
    piped = ("\ufeff" + "\n".join(sentences) + "\n").encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(piped)))

    out = {
        "txt": run_predict(ckpts["text"], tmp_path / "in.txt", tmp_path / "txt"),
        "tsv": run_predict(ckpts["text"], tmp_path / "in.tsv", tmp_path / "tsv"),
        "csv": run_predict(
            ckpts["text"], tmp_path / "in.csv", tmp_path / "csv", "text_column=review"
        ),
        "jsonl": run_predict(
            ckpts["text"], tmp_path / "in.jsonl", tmp_path / "jsonl", "format=json"
        ),
        "json": run_predict(ckpts["text"], tmp_path / "in.json", tmp_path / "json"),
        "stdin": run_predict(ckpts["text"], "-", tmp_path / "stdin"),
    }
    results = {k: read_csv(p) for k, p in out.items() if p.suffix == ".csv"}
    results["jsonl"] = json.loads(out["jsonl"].read_text())
    # lines end as sft-eval's and the sweep summary's do (was: CRLF, the csv module's default)
    assert b"\r" not in out["txt"].read_bytes()
    assert out["txt"] == tmp_path / "txt" / "predictions.csv"

    # ids: line numbers (the blank line counts, and a warning says it is left out), the index
    # column, data lines of csv/jsonl
    assert [r["id"] for r in results["txt"]] == ["1", "3", "4", "5", "6"]
    assert (
        f"inputs={tmp_path / 'in.txt'}: 1 blank line left out (line 2); the predictions' ids "
        "are the texts' line numbers"
    ) in caplog.messages
    assert [r["id"] for r in results["tsv"]] == ["10", "11", "12", "13", "14"]
    # JSON numbers in format=json, as the lines are numbered (was: "1", "2", ...)
    assert [r["id"] for r in results["jsonl"]] == [1, 2, 3, 4, 5]
    assert [r["id"] for r in results["stdin"]] == ["1", "2", "3", "4", "5"]
    # its own format=json output, a JSON array (was: refused as not JSON Lines), also without
    # text_column=text (was: "no column 'sentence'")
    for named in ([], ["text_column=text"]):
        again = run_predict(ckpts["text"], out["jsonl"], tmp_path / f"again{len(named)}", *named)
        assert [(r["id"], r["text"]) for r in read_csv(again)] == [
            (str(r["id"]), r["text"]) for r in results["jsonl"]
        ]

    # the probabilities the model gives the datamodule's own (cached) tokens of these sentences
    bundle = load_bundle(ckpts["text"])
    split = bundle.datamodule.load_split("val")
    batch = bundle.collate(
        [{k: v for k, v in split.example(i).items() if k != "labels"} for i in range(5)]
    )
    expected = bundle.logits(batch).softmax(-1)
    names = bundle.class_names
    for kind, got in results.items():
        probs = torch.tensor([[float(r[f"prob_{n}"]) for n in names] for r in got])
        assert torch.allclose(probs, expected, atol=2e-6), kind
        assert [r["text"] for r in got] == sentences
        assert [r["pred_name"] for r in got] == [names[i] for i in expected.argmax(-1).tolist()]
        assert [int(r["pred"]) for r in got] == expected.argmax(-1).tolist()
    # probabilities written as sft-eval writes them (was: 9e-05 and 0.0 beside 0.000086)
    assert all(re.fullmatch(r"\d\.\d{6}", r[f"prob_{n}"]) for r in results["txt"] for n in names)


def test_piped_text_is_split_into_lines_as_a_files_is(tmp_path, monkeypatch):
    """A lone carriage return (scraped text) ends a line in a file, as Python reads files; piped
    in, it stayed inside a text: the same bytes gave fewer predictions and other ids."""
    data = b"good movie\rreally\nbad\r\nawful film\n"
    (tmp_path / "in.txt").write_bytes(data)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    piped, filed = read_texts(STDIN, "text"), read_texts(tmp_path / "in.txt", "text")
    assert piped.texts == filed.texts == ["good movie", "really", "bad", "awful film"]
    assert piped.ids == filed.ids == ["1", "2", "3", "4"]


def test_a_model_loaded_to_predict_says_nothing_of_training(ckpts, caplog):
    """sft-predict, sft-eval and sft-export logged training's lines as they built the model:
    "model: N of N parameters train (100.00 %)" and FastDropout's."""
    with caplog.at_level(logging.INFO):
        load_bundle(ckpts["text"])
    said = [m for m in caplog.messages if "parameters train" in m or "FastDropout" in m]
    assert not said, said


def test_standard_input_that_is_not_utf8_is_one_line(monkeypatch):
    """A byte that is not UTF-8 on a pipe reached the tokenizer as a lone surrogate: TypeError
    "TextEncodeInput must be Union[...]" and a traceback (a file named it in one line)."""
    piped = io.TextIOWrapper(io.BytesIO(b"terrible movie\nsuperb \xff\xfe film\n"))
    monkeypatch.setattr("sys.stdin", piped)
    with pytest.raises(SFTError) as error:
        read_texts(STDIN, "text")
    assert str(error.value) == (
        "inputs=-, line 2: not UTF-8 text (invalid start byte at byte 7 of the line: "
        "b'\\xff\\xfe f'); give UTF-8 text"
    )


def test_ids_are_the_files_own_or_line_numbers_never_a_mix(tmp_path, caplog):
    # the record without an id sits on line 2, which the first record names as its id
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        json.dumps({"id": 2, "sentence": "fine"}) + "\n" + json.dumps({"sentence": "bad"}) + "\n"
    )
    repeated = tmp_path / "repeated.tsv"
    repeated.write_text("index\tsentence\n7\tfine\n7\tbad\n8\tok\n")
    with caplog.at_level(logging.WARNING, logger="sft.inference.inputs"):
        mixed_inputs = read_texts(mixed, "sentence")
        repeated_inputs = read_texts(repeated, "sentence")
    warnings = [r.getMessage() for r in caplog.records if r.name == "sft.inference.inputs"]

    assert mixed_inputs.ids == ["1", "2"] and not mixed_inputs.has_index
    assert f"inputs={mixed}, line 2: no index/id/idx value" in warnings[0]
    # the user's own ids stay theirs, repeated or not, with a warning
    assert repeated_inputs.ids == ["7", "7", "8"] and repeated_inputs.has_index
    assert "1 id(s) occur more than once (first: '7')" in warnings[1]
    assert len(warnings) == 2


def test_sst2_test_file_gets_a_glue_submission(ckpts, data_dir, tmp_path):
    lines = (data_dir / "sst2" / "test.tsv").read_text(encoding="utf-8").splitlines()[:13]
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = run_predict(ckpts["text"], tmp_path / "sst2" / "test.tsv", tmp_path / "run")

    submission = (tmp_path / "run" / "SST-2.tsv").read_text().splitlines()
    assert submission[0] == "index\tprediction"
    body = [line.split("\t") for line in submission[1:]]
    assert [i for i, _ in body] == [line.split("\t")[0] for line in lines[1:]]
    assert [p for _, p in body] == [r["pred"] for r in read_csv(out)]
    assert {p for _, p in body} <= {"0", "1"}
    # a second prediction into that folder: its fixed name needs another folder (was: "give
    # another output", which does not help)
    with pytest.raises(SFTError, match=r"SST-2\.tsv already exists: give another output folder"):
        run_predict(
            ckpts["text"], tmp_path / "sst2" / "test.tsv", tmp_path / "run", f"output={out}.b.csv"
        )

    # other files get one only when asked; a txt has no index column: rows count from 0
    (tmp_path / "few.txt").write_text("fine\nawful\n")
    run_predict(ckpts["text"], tmp_path / "few.txt", tmp_path / "plain")
    assert not (tmp_path / "plain" / "SST-2.tsv").exists()
    run_predict(ckpts["text"], tmp_path / "few.txt", tmp_path / "asked", "glue_submission=true")
    rows = (tmp_path / "asked" / "SST-2.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["0", "1"]


@pytest.mark.parametrize("kind", ["image", "image_lora"])
def test_image_file_and_folder_predictions(kind, ckpts, data_dir, tmp_path, caplog):
    bundle = load_bundle(ckpts[kind])
    bundle.datamodule.setup("test")
    images = torch.stack([bundle.datamodule.test_data[i][0] for i in range(5)])
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    paths = [folder / "b.png", folder / "a.png", folder / "more" / "c.png", folder / "d.jpeg"]
    for path, image in zip(paths, images, strict=False):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    (folder / "notes.txt").write_text("not an image")

    with caplog.at_level(logging.WARNING, logger="sft.data.image_files"):
        out = run_predict(ckpts[kind], folder, tmp_path / "run", "format=json", "batch_size=3")
    rows = json.loads(out.read_text())
    assert [r["id"] for r in rows] == ["a.png", "b.png", "d.jpeg", "more/c.png"]
    # the file left out is named (was: skipped without a word)
    assert [
        r.getMessage().split(" (images:")[0]
        for r in caplog.records
        if r.name == "sft.data.image_files"
    ] == [f"1 file under {folder} not used: {folder / 'notes.txt'} (extension .txt not read)"]
    expected = bundle.logits(bundle.image_inputs(images[:3])).softmax(-1)
    names = bundle.class_names
    got = torch.tensor([[r[f"prob_{n}"] for n in names] for r in rows])
    # rows a, b, more/c hold images 1, 0, 2 (PNG is lossless; d, a JPEG, is not)
    assert torch.allclose(got[[0, 1, 3]], expected[[1, 0, 2]], atol=2e-6)
    assert all(abs(sum(r[f"prob_{n}"] for n in names) - 1) < 1e-4 for r in rows)
    assert rows[0]["pred_name"] == names[int(expected[1].argmax())]

    single = read_csv(run_predict(ckpts[kind], paths[0], tmp_path / "one"))
    assert len(single) == 1 and single[0]["id"] == str(paths[0])
    assert single[0]["pred_name"] == rows[1]["pred_name"]


def test_images_that_cannot_be_decoded_are_one_error(ckpts, tmp_path, monkeypatch):
    """An image past PIL's decompression-bomb limit and one of 32-bit float pixels (was: PIL's
    DecompressionBombError traceback, and a float image clipped to white)."""
    big = tmp_path / "big.png"
    Image.new("L", (64, 64)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > 2 x 1000: PIL refuses
    with pytest.raises(
        SFTError, match=r"^1 of 1 images cannot be decoded: .*big\.png \(Decompr"
    ) as err:
        run_predict(ckpts["image"], big, tmp_path / "run")
    # what to do, and no "skip_bad_files=true to predict the others" where there are none
    assert str(err.value).endswith("images this large are refused: save it smaller)")
    # PIL's warning for large images it still decodes (its own line, with its source line)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 1000 < 64 x 64 < 2 x 3000
    with warnings.catch_warnings(record=True) as caught:
        assert len(read_csv(run_predict(ckpts["image"], big, tmp_path / "run1"))) == 1
    assert not [w for w in caught if w.category is Image.DecompressionBombWarning]
    monkeypatch.undo()
    depth = tmp_path / "depth.tiff"
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(depth)
    with pytest.raises(SFTError, match=r"depth\.tiff \(ValueError: 32-bit"):
        run_predict(ckpts["image"], depth, tmp_path / "run2")


def test_a_folder_with_images_that_cannot_be_decoded(ckpts, tmp_path, caplog):
    """Every bad image named at once, before any is predicted; skip_bad_files=true predicts the
    others (was: an error naming the first, at its batch, and +data.skip_bad_files=true
    accepted without effect)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        Image.new("RGB", (12, 12), (90, 30, 200)).save(folder / name)
    (folder / "b.jpg").write_bytes(b"")
    (folder / "d.jpg").write_text("not an image")
    with pytest.raises(
        SFTError,
        match=r"^2 of 4 images cannot be decoded: .*b\.jpg .*d\.jpg .*"
        r"set skip_bad_files=true to predict the others$",
    ):
        run_predict(ckpts["image"], folder, tmp_path / "run")
    with logs_warning(caplog, r"^2 of 4 images .*skip_bad_files=true: left out of the predictions"):
        out = run_predict(ckpts["image"], folder, tmp_path / "run2", "skip_bad_files=true")
    assert [row["id"] for row in read_csv(out)] == ["a.png", "c.png"]
    # the training setting's name says the same (was: accepted without effect)
    bundle = SimpleNamespace(modality="image", image_size=16, ckpt_path="m.ckpt")
    cfg = OmegaConf.create({"inputs": str(folder), "skip_bad_files": False})
    cfg.data = {"skip_bad_files": True}
    assert predict_module.read_inputs(cfg, bundle).ids == ["a.png", "c.png"]


def test_rows_read_into_one_quoted_field_are_named(tmp_path, caplog):
    path = tmp_path / "new.csv"
    path.write_text('id,text\n1,"forgot to close\n2,nice\n3,ugly\n4,my tv is 17"\n5,fine\n')
    with logs_warning(
        caplog, rf"^{path}, lines 2-5: one quoted field spans 4 lines .* quoting=none"
    ):
        inputs = read_texts(path, "text", quoting="minimal")
    assert inputs.ids == ["1", "5"]
    # texts over lines, each with a comma: their lines have an id's place but no id (was:
    # warned as rows read into one field, with advice that breaks the file)
    caplog.clear()
    path.write_text(
        'id,text\n1,"Loved it.\nThe cast, the score: all great."\n2,"Meh.\nToo long, too slow."\n'
    )
    with caplog.at_level(logging.WARNING):
        inputs = read_texts(path, "text", quoting="minimal")
    assert inputs.ids == ["1", "2"] and not caplog.records
    # ids that are words, label names: a row's fields all the same (was: warned; kept)
    for header, rows in (
        ("id,text", ("r1,", "r2,nice", "r3,ugly")),
        ("label,text", ("pos,", "neg,ugly", "pos,fine")),
    ):
        caplog.clear()
        path.write_text(f'{header}\n{rows[0]}"forgot to close\n{rows[1]}\n{rows[2]}"\n')
        with logs_warning(caplog, rf"^{path}, lines 2-4: one quoted field spans 3 lines"):
            read_texts(path, "text", quoting="minimal")
    # a text's own line whose part in the source column is no word: not a row, no warning
    caplog.clear()
    path.write_text('text,source\n"Loved it.\nThe cast, the score",web\n')
    with caplog.at_level(logging.WARNING):
        read_texts(path, "text", quoting="minimal")
    assert not caplog.records
    # a spreadsheet's ';' file (was: only the columns it has, sft-train said more)
    path.write_text("text;label\ngood;1\n")
    with pytest.raises(SFTError, match=r"\(the file looks separated by ';': save it with commas"):
        read_texts(path, "text", quoting="minimal")
    # a comma file named .tsv: its suffix says how it is read (was: the column hint alone)
    (tmp_path / "comma.tsv").write_text("text,label\ngood movie,1\n")
    with pytest.raises(
        SFTError, match=r"\(the file looks like csv: give it a \.csv suffix, which says how it is"
    ):
        read_texts(tmp_path / "comma.tsv", "text")
    # a quote that closes the field early (was: "line 5: malformed row (',' expected after '"')")
    path.write_text('id,text\n1,"forgot to close\n2,nice\n4,"last\n5,fine\n')
    with pytest.raises(
        SFTError,
        match=r"lines 2-4: a quote \(\"\) closes a quoted field and text "
        r"follows it \(is the quote that opens on line 2 left open\?\)",
    ):
        read_texts(path, "text", quoting="minimal")
    path.write_text('id,text\n1,"he said "hi" there"\n')
    with pytest.raises(SFTError, match=r'line 2: .* inside quotes a " is written twice \(""\)'):
        read_texts(path, "text", quoting="minimal")


def test_inputs_are_read_as_in_training_and_settings_that_do_not_apply_are_refused(tmp_path):
    """A model trained on quoted TSV (data.quoting=minimal) predicts a quoted TSV as it was
    trained (was: the quotes kept as text, another input than sft-eval's); settings that do not
    apply to the file or the model are one line."""
    reader = SimpleNamespace(source="tsv", quoting="minimal")
    dm = SimpleNamespace(reader=reader, text_column="text", text_pair_column=None)
    bundle = SimpleNamespace(modality="text", datamodule=dm, ckpt_path="m.ckpt")
    (tmp_path / "new.tsv").write_text('text\n"a ""fine"" film"\n')
    (tmp_path / "new.csv").write_text('text\n"a ""fine"" film"\n')
    cfg = OmegaConf.create({"text_column": None, "text_pair_column": None, "quoting": None})
    for name in ("new.tsv", "new.csv"):
        cfg.inputs = str(tmp_path / name)
        assert predict_module.read_inputs(cfg, bundle).texts == ['a "fine" film']
    cfg.inputs, cfg.quoting = str(tmp_path / "new.tsv"), "none"  # asked: as asked
    assert predict_module.read_inputs(cfg, bundle).texts == ['"a ""fine"" film"']
    # a .txt has no columns and no quoting (was: the setting ignored without a word)
    (tmp_path / "new.txt").write_text("a fine film\n")
    cfg.inputs, cfg.quoting, cfg.text_column = str(tmp_path / "new.txt"), None, "review"
    with pytest.raises(SFTError, match=r"^text_column= is for TSV/CSV/JSONL inputs, but inputs="):
        predict_module.read_inputs(cfg, bundle)
    cfg.inputs = "-"
    with pytest.raises(SFTError, match=r"but inputs= is standard input: leave text_column out$"):
        predict_module.read_inputs(cfg, bundle)
    # a second text for a model of single texts (was: read, and its predictions changed)
    cfg.inputs, cfg.text_column = str(tmp_path / "new.csv"), None
    cfg.text_pair_column = "text"
    with pytest.raises(SFTError, match=r"^text_pair_column=text: this model classifies single "):
        predict_module.read_inputs(cfg, bundle)


def test_inputs_of_the_wrong_modality(ckpts, tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello\n")
    with pytest.raises(SFTError, match="is an image model"):
        run_predict(ckpts["image"], tmp_path / "a.txt", tmp_path / "run")
    # a folder of texts (was: said to hold images)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "b.txt").write_text("hello\n")
    with pytest.raises(SFTError, match=r"texts is a folder \(read as images\) but .* text model"):
        run_predict(ckpts["text"], tmp_path / "texts", tmp_path / "run2")
    # the command line: one `error:` line, no traceback
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    argv = [f"ckpt_path={ckpts['text']}", f"inputs={tmp_path / 'x.png'}"]
    capsys.readouterr()
    argv.append(f"hydra.run.dir={tmp_path / 'cli'}")
    assert run_entry_point(sft.predict.main, ["sft-predict", *argv]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: inputs=") and "text model" in last, err[-2000:]
    assert "Traceback" not in err


def test_predictions_already_written_are_never_replaced(ckpts, tmp_path):
    """`output=` of an existing file, or a run directory given twice (was: written over)."""
    (tmp_path / "a.txt").write_text("a fine film\n")
    (tmp_path / "mine.csv").write_text("precious\n")
    with pytest.raises(SFTError, match=r"mine\.csv already exists: give another output"):
        run_predict(
            ckpts["text"], tmp_path / "a.txt", tmp_path / "run", f"output={tmp_path / 'mine.csv'}"
        )
    assert (tmp_path / "mine.csv").read_text() == "precious\n"
    (tmp_path / "folder").mkdir()
    with pytest.raises(SFTError, match=r"folder is a folder: .*output=.*folder/predictions\.csv"):
        run_predict(
            ckpts["text"], tmp_path / "a.txt", tmp_path / "run", f"output={tmp_path / 'folder'}"
        )
    first = run_predict(ckpts["text"], tmp_path / "a.txt", tmp_path / "run")
    with pytest.raises(SFTError, match=r"predictions\.csv already exists"):
        run_predict(ckpts["text"], tmp_path / "a.txt", tmp_path / "run")
    assert first.is_file()


def test_outputs_that_cannot_be_what_was_asked(ckpts, tmp_path, monkeypatch):
    """Was: a FileExistsError traceback (a folder of output= is a file), CSV written into a
    .json file, and a GLUE submission of a model that is not binary."""
    (tmp_path / "a.txt").write_text("a fine film\n")
    (tmp_path / "notes.csv").write_text("x\n")
    with pytest.raises(
        SFTError, match=r"notes\.csv is a file, not a folder: .* give another output"
    ):
        run_predict(
            ckpts["text"],
            tmp_path / "a.txt",
            tmp_path / "run",
            f"output={tmp_path}/notes.csv/p.csv",
        )
    with pytest.raises(SFTError, match=r"names a \.json file but format=csv: set format=json"):
        run_predict(
            ckpts["text"], tmp_path / "a.txt", tmp_path / "run", f"output={tmp_path}/p.json"
        )
    assert not (tmp_path / "p.json").exists()
    # the suffix read whatever its case, and a format sft-predict does not write refused (were:
    # csv rows written into p.JSON and p.tsv)
    for name, said in (("p.JSON", r"names a \.json file but"), ("p.tsv", r"a tab-separated file")):
        with pytest.raises(SFTError, match=said):
            run_predict(
                ckpts["text"], tmp_path / "a.txt", tmp_path / "run", f"output={tmp_path}/{name}"
            )
        assert not (tmp_path / name).exists()
    three_classes = dataclasses.replace(load_bundle(ckpts["text"]), class_names=["a", "b", "c"])
    monkeypatch.setattr(predict_module, "load_bundle", lambda *args: three_classes)
    with pytest.raises(SFTError, match=r"glue_submission=true writes SST-2's binary labels, but"):
        run_predict(ckpts["text"], tmp_path / "a.txt", tmp_path / "run", "glue_submission=true")


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_size_out_of_range_is_refused_before_anything_is_read(tmp_path, batch_size):
    """Was refused only after the checkpoint was loaded and the inputs read (a folder's
    warnings printed first)."""
    with pytest.raises(SFTError, match=rf"batch_size must be an integer > 0, got {batch_size}"):
        run_predict(
            tmp_path / "no.ckpt",
            tmp_path / "nothing_here",
            tmp_path / "run",
            f"batch_size={batch_size}",
        )


@pytest.mark.parametrize(
    ("name", "content", "predicted"),
    [
        # one column: `""` and spaces were taken for blank lines and dropped, without a word
        ("one.csv", 'review\ngood\n\n""\n   \nbad\n', ["good", "", "   ", "bad"]),
        # two columns, JSONL: were predicted without a word
        ("two.csv", "id,review\n1,good\n2,\n3,  \n", ["good", "", "  "]),
        ("rows.jsonl", '{"review": "good"}\n{"review": ""}\n{"review": " "}\n', ["good", "", " "]),
        # pandas' to_json writes a missing text as null: was an error, where an empty cell is not
        (
            "null.jsonl",
            '{"review": "good"}\n{"review": null}\n{"review": " "}\n',
            ["good", "", " "],
        ),
    ],
)
def test_empty_texts_in_a_table_are_predicted_and_named(name, content, predicted, tmp_path, caplog):
    path = tmp_path / name
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="sft.inference.inputs"):
        inputs = read_texts(path, "review")
    assert inputs.texts == predicted
    lines = "4, 5" if name == "one.csv" else "3, 4" if name == "two.csv" else "2, 3"
    # a one-column file's blank line is no text, but it was left out without a word (a .txt's
    # blank lines are named)
    blank = [
        f"{path}, 1 blank line left out (line 3): a blank line holds no text; an empty text is "
        'written "" (its row is kept)'
    ]
    assert [r.getMessage() for r in caplog.records] == [
        *(blank if name == "one.csv" else []),
        f"inputs={path}: 2 of {len(predicted)} texts are empty or whitespace-only (lines {lines}); "
        "their predictions are of no words",
    ]


def test_blank_lines_between_the_rows_of_a_table_are_named(tmp_path, caplog):
    """A blank or whitespace-only line between the rows of a file of several columns (training
    data or inputs) was left out without a word; those at the file's end stay unnamed."""
    path = tmp_path / "rows.csv"
    path.write_text("id,review\n1,good\n\n2,bad\n   \n3,ok\n\n\n")
    with caplog.at_level(logging.WARNING):
        inputs = read_texts(path, "review")
    assert inputs.texts == ["good", "bad", "ok"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}, 2 blank lines between the rows left out (lines 3, 5)"
    ]


def test_a_model_input_setting_other_than_the_trained_one_is_named(ckpts, tmp_path, caplog):
    """`+data.mean=...` (or image_size, max_length, ...) unlike the model's training data
    changed its inputs without a word (and sft-export's metadata.json then gave that value as
    the model's); the trained value given again is silent."""
    trained = torch.load(ckpts["image"], weights_only=True)["datamodule_hyper_parameters"]["mean"]
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    same = "+data.mean=[" + ",".join(map(str, trained)) + "]"
    with caplog.at_level(logging.WARNING, logger="sft.inference.model_inputs"):
        run_predict(ckpts["image"], image, tmp_path / "same", same)
        assert not caplog.records
        run_predict(ckpts["image"], image, tmp_path / "other", "+data.mean=[0.5,0.5,0.5]")
    assert [r.getMessage() for r in caplog.records] == [
        f"data.mean=[0.5, 0.5, 0.5]: the model was trained with mean {trained}; its inputs now "
        f"differ from its training inputs (leave data.mean out to use {trained})"
    ]


def test_texts_longer_than_the_models_max_length_are_said_to_be_cut(ckpts, tmp_path, caplog):
    """A long review was cut to max_length tokens, dropping its verdict, without a word."""
    bundle = load_bundle(ckpts["text"])
    long = " ".join(["it was fine at first, but in the end it was terrible"] * 40)
    (tmp_path / "in.txt").write_text(f"{long}\nwarm and funny\n")
    run_predict(ckpts["text"], tmp_path / "in.txt", tmp_path / "out")
    assert (
        f"1 of 2 texts are longer than data.max_length={bundle.datamodule.max_length} tokens "
        "and are cut to it, as in training"
    ) in caplog.messages
    # another length than the model's: not "as in training" (was: said after the warning that
    # the model was trained with another)
    caplog.clear()
    run_predict(ckpts["text"], tmp_path / "in.txt", tmp_path / "out8", "+data.max_length=8")
    assert (
        "1 of 2 texts are longer than data.max_length=8 tokens and are cut to it" in caplog.messages
    )


def test_sentence_pair_predictions_carry_both_texts(tmp_path, caplog):
    """predictions.csv of a pair model had the first text only (the hypothesis was missing);
    an empty hypothesis was not named, as an empty premise was."""
    from inference_checkpoints import SHORT, TINY_BERT

    from sft.jobs.train import train

    rows = [("a cat sat", "an animal sat", "1"), ("a cat sat", "nobody sat", "0")] * 8
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text(
            "premise\thypothesis\tlabel\n" + "".join("\t".join(r) + "\n" for r in rows)
        )
    run = tmp_path / "run"
    overrides = [
        "experiment=sst2_minilm",
        *SHORT,
        "trainer.accelerator=cpu",
        "model.backbone.pretrained=false",
        f"model.backbone.config_overrides={TINY_BERT}",
        "model.linear_probe=null",
        "data=text_files",
        f"data.data_dir={tmp_path}",
        "data.text_column=premise",
        "data.text_pair_column=hypothesis",
        "data.batch_size=8",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    train(compose_config("train", overrides, run))
    (tmp_path / "in.tsv").write_text("premise\thypothesis\na dog ran\tan animal ran\nrun\t\n")
    out = run_predict(run / "checkpoints" / "last.ckpt", tmp_path / "in.tsv", tmp_path / "out")
    row, empty = read_csv(out)
    assert (row["text"], row["text_pair"]) == ("a dog ran", "an animal ran")
    assert (empty["text"], empty["text_pair"]) == ("run", "")
    assert (
        f"inputs={tmp_path / 'in.tsv'}: 1 of 2 pairs have an empty or whitespace-only text "
        "(line 3); their predictions are of one text or none"
    ) in caplog.messages
    # the checkpoint's data read as single texts: refused, as sft-eval refuses it (was: the
    # pair model predicted, or was exported, as a single-text one)
    with pytest.raises(SFTError, match=r"^data\.text_pair_column=null: this model classifies "):
        run_predict(
            run / "checkpoints" / "last.ckpt",
            tmp_path / "in.tsv",
            tmp_path / "single",
            "+data.text_pair_column=null",
        )


def test_a_checkpoint_of_a_users_datamodule_is_refused_in_one_line(tmp_path):
    """A datamodule as README lists it (SFTDataModule: loaders, probe_dataloader,
    transform_batch) trains and sft-eval scores it, but sft-predict and sft-export were
    AttributeError / TypeError tracebacks: they prepare inputs from an image datamodule's size
    and normalisation, which it does not have."""
    from conftest import FAST

    run = tmp_path / "run"
    settings = [o for o in FAST if not o.startswith("data.")]
    user_data = ["~data", "+data._target_=helpers.user_data.RandomImages", "model.num_classes=2"]
    overrides = [*settings, *user_data, "trainer.max_epochs=1", "test=false"]
    train(compose_config("train", overrides, run))
    ckpt = run / "checkpoints" / "last.ckpt"
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    message = (
        rf"^checkpoint {ckpt}: its datamodule RandomImages has no image_size, transform, which "
        r"sft-predict and sft-export read to prepare image inputs as in training; derive it "
        r"from sft.data.base.ImageDataModule$"
    )
    with pytest.raises(SFTError, match=message):
        run_predict(ckpt, tmp_path / "x.png", tmp_path / "predict")
    with pytest.raises(SFTError, match=message):
        export(compose_config("export", [f"ckpt_path={ckpt}"], tmp_path / "export"))
    # a backbone of the user's own too: nothing says what the model takes
    with pytest.raises(SFTError, match=r"declares what the model takes \(modality = 'image' or"):
        check_inference_inputs(SimpleNamespace(), None, ckpt)


@pytest.mark.parametrize(
    ("datamodule", "message"),
    [
        # was: AttributeError: 'Plain' object has no attribute 'configure_input'
        ("Plain", r"^Plain is not an sft datamodule: it has no modality, has_labelled_test, "),
        # was: "is not an sft datamodule: derive it from SFTDataModule", which it does
        ("NoClassNames", r"^NoClassNames is not an sft datamodule: it has no class_names; "),
        # was: a bare NotImplementedError
        ("NoProbe", r"^NoProbe has no probe_dataloader, which the linear probe"),
        # was: IndexError: Target 5 is out of bounds, from inside L-BFGS, or from the loss
        ("LabelsFrom5", r"^LabelsFrom5 gives labels 5..6 for 2 classes: labels are class "),
        # every batch, before it goes to the device (was: only the first batch of the run,
        # usually a sanity-check batch of validation's)
        ("LabelsFrom5-no-probe", r"^LabelsFrom5 gives labels 5..6 for 2 classes: labels are "),
        ("LateBadLabel", r"^LateBadLabel gives labels 0..5 for 2 classes: labels are "),
        # was: cross_entropy's "expected target dtype to be Long", a traceback
        ("Int32Labels", r"^Int32Labels gives labels of dtype torch\.int32: labels are int64 "),
        # was: trained without a word; sft-eval's predictions.csv then an IndexError
        ("FewClassNames", r"^FewClassNames has 1 class_names for num_classes=2: give one name "),
    ],
)
def test_mistakes_in_a_users_datamodule_are_one_line(datamodule, message, tmp_path):
    from conftest import FAST

    settings = [o for o in FAST if not o.startswith("data.")]
    name = datamodule.removesuffix("-no-probe")
    user_data = ["~data", f"+data._target_=helpers.user_data.{name}", "model.num_classes=2"]
    overrides = [*settings, *user_data, "trainer.max_epochs=1", "test=false"]
    if datamodule in ("NoProbe", "LabelsFrom5"):
        overrides.append("model.linear_probe={max_iter:5}")
    with pytest.raises(SFTError, match=message):
        train(compose_config("train", overrides, tmp_path / "run"))


def test_a_glue_submission_writes_glue_labels_by_class_name(tmp_path):
    """A model whose classes are [positive, negative] wrote its class index: every label of
    SST-2.tsv inverted (GLUE: 0 negative, 1 positive), without a word."""
    assert glue_labels_of(["positive", "negative"], "x") == [1, 0]
    assert glue_labels_of(["0", "1"], "x") == [0, 1]
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])  # class 0, then class 1
    write_glue_submission(tmp_path / "SST-2.tsv", ["0", "1"], probs, [1, 0])
    assert (tmp_path / "SST-2.tsv").read_text() == "index\tprediction\n0\t1\n1\t0\n"
    with pytest.raises(SFTError, match=r"^inputs=t.tsv writes GLUE's SST-2 labels .* \['good', "):
        glue_labels_of(["good", "bad"], "inputs=t.tsv")


def test_a_datamodule_that_records_no_settings_is_warned_about(tmp_path, caplog):
    """A user's datamodule without self.save_hyperparameters(): its checkpoint holds no settings
    and sft-eval rebuilt it with its defaults (other data, other scores) without a word."""
    from helpers.user_data import ForgetsItsSettings, RandomImages

    from sft.contracts import unrecorded_settings
    from sft.models.loading import trained_data_config

    assert unrecorded_settings(RandomImages, RandomImages().hparams) == []
    forgets = ForgetsItsSettings(flip_labels=True)
    assert unrecorded_settings(ForgetsItsSettings, forgets.hparams) == ["batch_size", "flip_labels"]
    target = "helpers.user_data.ForgetsItsSettings"
    with caplog.at_level(logging.WARNING):
        config = trained_data_config(tmp_path / "x.ckpt", {"datamodule_target": target})
    assert config == {"_target_": target}
    assert (
        f"its datamodule {target} recorded none of its settings (batch_size, flip_labels): "
        "rebuilt with their defaults"
    ) in caplog.text


def test_sst_trees_are_predicted_as_their_sentences(ckpts, data_dir, tmp_path, caplog):
    """`sft-predict inputs=<an SST trees file>` (data=sst5's dev.txt, where the training log's
    hint led): each tree's sentence is predicted, as training reads it (was: the tree as
    written, its gold labels in the text). A text that only starts with '(' is a text."""
    caplog.set_level(logging.INFO)
    trees = (data_dir / "sst" / "dev.txt").read_text(encoding="utf-8").splitlines()[:4]
    (tmp_path / "trees.txt").write_text("\n".join(trees) + "\n", encoding="utf-8")
    sentences = read_sst_trees(data_dir / "sst" / "dev.txt", binary=False, phrases=False)
    (tmp_path / "sentences.txt").write_text("\n".join(sentences.texts[:4]) + "\n")
    got = read_csv(run_predict(ckpts["text"], tmp_path / "trees.txt", tmp_path / "t"))
    want = read_csv(run_predict(ckpts["text"], tmp_path / "sentences.txt", tmp_path / "s"))
    assert got == want and len(got) == 4
    assert f"inputs={tmp_path / 'trees.txt'}: SST trees; predicting" in caplog.text
    plain = ["(3 stars) a fine film", "(2 (2 not) a tree", "(10 out of 10)", "(2 weeks later)"]
    for text in plain:  # each alone: texts that parse as a tree are not SST's trees either
        (tmp_path / "plain.txt").write_text(text + "\n")
        assert read_texts(tmp_path / "plain.txt", "sentence").texts == [text]


@pytest.mark.parametrize("kind", ["text", "image"])
def test_predict_probs_of_no_inputs_is_no_rows(kind, ckpts):
    """sft used as a library: predict_probs of an empty input list was an IndexError (images)
    or torch.cat's RuntimeError (texts); it is a (0, num_classes) tensor, as for any count."""
    bundle = load_bundle(ckpts[kind])
    inputs = TextInputs([], []) if kind == "text" else ImageInputs([], [])
    probs = predict_probs(bundle, inputs)
    assert probs.shape == (0, len(bundle.class_names))
    assert probs.dtype == torch.float32


def test_texts_are_batched_by_length_and_predicted_in_input_order(ckpts, data_dir, monkeypatch):
    """A file's texts in its own order padded each batch to the longest text among them (a
    batch of short texts beside one long one); texts of like length now share a batch, the
    longest first, and each row of the output is still its input's."""
    bundle = load_bundle(ckpts["text"])
    long_texts = [sentence for sentence, _ in dev_rows(data_dir, 40) if len(sentence) > 150][:2]
    texts = [long_texts[0], "fine", long_texts[1], "bad"]
    widths = []
    collate = bundle.collate

    def recorded(features):
        batch = collate(features)
        widths.append(batch["input_ids"].shape[1])
        return batch

    monkeypatch.setattr(bundle, "collate", recorded)
    together = predict_probs(bundle, TextInputs(["0", "1", "2", "3"], texts), batch_size=2)
    assert widths[0] > 20 and widths[1] <= 4, widths  # the long pair, then the short one
    alone = torch.cat([predict_probs(bundle, TextInputs(["0"], [t]), batch_size=1) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_sft_predict_shows_its_progress_on_a_terminal_only(ckpts, data_dir, tmp_path, monkeypatch):
    """sft-predict said nothing until every input was predicted (a long file: minutes without a
    word); a progress bar now counts the inputs on a terminal, and nothing is drawn in a log
    file or pipe (carriage returns)."""
    texts = [sentence for sentence, _ in dev_rows(data_dir, 5)]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    for terminal in (True, False):
        stderr = io.StringIO()
        stderr.isatty = lambda terminal=terminal: terminal
        monkeypatch.setattr("sys.stderr", stderr)
        run_predict(ckpts["text"], tmp_path / "in.txt", tmp_path / f"{terminal}", "batch_size=2")
        drawn = stderr.getvalue()
        assert ("predicting: 100%" in drawn and "5/5" in drawn) is terminal, drawn
    stderr = io.StringIO()
    stderr.isatty = lambda: True
    monkeypatch.setattr("sys.stderr", stderr)
    predict_probs(load_bundle(ckpts["text"]), TextInputs(["0"], texts[:1]))  # sft.api's: no bar
    assert stderr.getvalue() == ""


def test_a_predictor_from_python_matches_sft_predict(ckpts, data_dir, tmp_path, caplog):
    """Predictions from Python on inputs held in memory (texts, PIL images) were possible only
    through internals, and a PIL image was an AttributeError: sft.api's predictor gives what
    sft-predict writes for the same inputs in files."""
    from PIL import Image

    from sft import api

    texts = [sentence for sentence, _ in dev_rows(data_dir, 6)]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    run_predict(ckpts["text"], tmp_path / "in.txt", tmp_path / "text_run")
    written = read_csv(tmp_path / "text_run" / "predictions.csv")
    predictor = api.load_predictor(ckpts["text"])
    got = predictor(texts, batch_size=4)
    names = predictor.class_names
    expected = torch.tensor([[float(r[f"prob_{n}"]) for n in names] for r in written])
    torch.testing.assert_close(got.probs, expected, atol=1e-6, rtol=0)
    assert got.predicted == [r["pred_name"] for r in written]
    with pytest.raises(SFTError, match="this model classifies single texts: give strings"):
        predictor([("a", "b")])
    with pytest.raises(SFTError, match=r"give strings, got 123$"):
        predictor(123)
    # one text is one input (was: a prediction per character)
    one = predictor(texts[0])
    assert one.probs.shape == (1, len(names))
    torch.testing.assert_close(one.probs[0], got.probs[0])

    # the checkpoint's data settings changed as sft-predict's +data.<key>= changes them (was:
    # no way to from Python)
    run_predict(ckpts["text"], tmp_path / "in.txt", tmp_path / "short_run", "+data.max_length=4")
    short_written = read_csv(tmp_path / "short_run" / "predictions.csv")
    short = api.load_predictor(ckpts["text"], data={"max_length": 4})(texts, batch_size=4)
    expected = torch.tensor([[float(r[f"prob_{n}"]) for n in names] for r in short_written])
    torch.testing.assert_close(short.probs, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(short.probs, got.probs)  # 4 tokens are not the whole texts
    caplog.clear()

    # empty texts are predicted with sft-predict's warning, named by position (was: no word)
    with caplog.at_level(logging.WARNING, logger="sft.inference.inputs"):
        assert predictor([texts[0], " ", "", texts[1]]).probs.shape[0] == 4
    assert caplog.messages == [
        "inputs=(python): 2 of 4 texts are empty or whitespace-only (inputs 1, 2); their "
        "predictions are of no words"
    ]

    folder = tmp_path / "images"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    images = []
    for i, size in enumerate((32, 40, 50)):
        pixels = torch.randint(0, 256, (size, size + 3, 3), generator=generator, dtype=torch.uint8)
        images.append(Image.fromarray(pixels.numpy(), "RGB"))
        images[-1].save(folder / f"{i}.png")
    run_predict(ckpts["image"], folder, tmp_path / "image_run")
    written = read_csv(tmp_path / "image_run" / "predictions.csv")
    predictor = api.load_predictor(ckpts["image"])
    from_memory = predictor(images)
    from_files = predictor([folder / f"{i}.png" for i in range(3)])
    torch.testing.assert_close(from_memory.probs, from_files.probs)
    names = predictor.class_names
    expected = torch.tensor([[float(r[f"prob_{n}"]) for n in names] for r in written])
    torch.testing.assert_close(from_memory.probs, expected, atol=1e-6, rtol=0)
    with pytest.raises(SFTError, match="no such image file"):
        predictor([folder / "missing.png"])
    # a file that is no image is named as such, with the others (was: asked whether it had
    # changed "since the images were listed", which nothing had)
    (folder / "notes.png").write_text("not an image")
    with pytest.raises(SFTError) as err:
        predictor([folder / "0.png", folder / "notes.png"])
    assert str(err.value).startswith(
        f"1 of 2 image files cannot be decoded: {folder / 'notes.png'}"
    )
    assert "listed" not in str(err.value)
    # one image or file is one input; other kinds are named (were: TypeError tracebacks)
    torch.testing.assert_close(predictor(images[1]).probs[0], from_memory.probs[1])
    torch.testing.assert_close(predictor(str(folder / "2.png")).probs[0], from_memory.probs[2])
    for wrong in ([torch.zeros(3, 8, 8)], [None]):
        with pytest.raises(SFTError, match="this model classifies images: give PIL images,"):
            predictor(wrong)
    # numpy's uint8 images, one or a list (were: "give PIL images", the array over many lines)
    arrays = [np.asarray(i) for i in images]
    torch.testing.assert_close(predictor(arrays).probs, from_memory.probs)
    torch.testing.assert_close(predictor(arrays[1]).probs[0], from_memory.probs[1])
    with pytest.raises(SFTError) as err:
        predictor(arrays[0].astype("float32"))
    assert str(err.value) == (
        "an image array is uint8, (height, width) or (height, width, 3) in RGB order, as "
        "numpy.asarray of a PIL image gives it; got float32 (32, 35, 3)"
    )
    # pixels of no known 8-bit scale, as in files (was: a ValueError)
    with pytest.raises(SFTError, match=r"^image 1: integer pixels \(PIL mode I\) have no known"):
        predictor([images[0], images[1].convert("I")])
    # a folder (was: "no such image file")
    with pytest.raises(SFTError, match=r"images: a folder; give image files \(sft-predict inputs"):
        predictor(folder)
