"""normpos.report.epoch_summary: the per-epoch / per-update valid-loss table the results READMEs quote."""

import json

import pytest

from normpos.report.epoch_summary import main, summary


def write_run(folder, rows, bleu=None):
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"config": folder.name, "seed": 1}))  # what load_runs needs
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if bleu is not None:
        (folder / "score.json").write_text(json.dumps({"test_tok_bleu": bleu}))


def validation(update, loss, epoch=1, bleu=None):
    return {"epoch": epoch, "num_updates": update, "valid_loss": loss, "valid_bleu": bleu}


@pytest.fixture
def root(tmp_path):
    write_run(tmp_path / "a" / "seed-1", [validation(50, 9.0251), validation(100, 8.9644), validation(150, 8.9381)],
              bleu=0.0)
    # stopped at update 100, no score: its later point and its BLEU are dashes
    write_run(tmp_path / "b" / "seed-1", [validation(50, 8.3234), validation(100, 7.5296)])
    return tmp_path


def test_per_update_rows_read_each_point_and_the_score(root):
    lines = summary(root, [50, 100, 150], key="num_updates", digits=3).splitlines()
    assert lines[0] == "| run | update 50 | update 100 | update 150 | last update | test BLEU (tok.) |"
    assert lines[2] == "| a/seed-1 | 9.025 | 8.964 | 8.938 | 150: 8.938 | 0.00 |"
    assert lines[3] == "| b/seed-1 | 8.323 | 7.530 | – | 100: 7.530 | – |"


def test_per_epoch_keeps_the_epochs_last_validation_and_no_bleu_column_without_scores(tmp_path):
    write_run(tmp_path / "r", [validation(10, 6.0, epoch=1, bleu=3.0), validation(20, 5.5, epoch=1, bleu=4.25),
                               validation(30, 5.0, epoch=2)])
    lines = summary(tmp_path, [1, 2, 3]).splitlines()
    assert lines[0] == "| run | epoch 1 | epoch 2 | epoch 3 | last epoch |"
    assert lines[2] == "| r | 5.50 / 4.2 | 5.00 | – | 2: 5.00 |"


def test_cli_prints_the_table_and_refuses_a_missing_folder(root, tmp_path, capsys):
    main([str(root), "--updates", "50", "--digits", "1"])
    assert "| a/seed-1 | 9.0 | 150: 8.9 | 0.00 |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "nope")])
    assert stop.value.code == 2
    assert "is not a folder" in capsys.readouterr().err
