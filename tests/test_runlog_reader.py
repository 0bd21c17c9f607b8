"""``runlog.StepsReader``: steps.csv read as it grows gives what a full read gives."""

from numpycnn import runlog

HEADER = "step,epoch,batch,loss,accuracy,lr,seconds\n"


def row(step):
    return f"{step},1,{step},{1 / step:.6f},0.5,0.01,{step / 10:.3f}\n"


def test_the_reader_parses_only_new_lines_and_starts_over_on_a_new_file(tmp_path):
    path = tmp_path / runlog.STEPS
    reader = runlog.StepsReader(path)
    assert reader.read() == []  # no file yet
    path.write_text(HEADER + row(1) + row(2) + "3,1,3,0.3")  # a torn last line
    assert [r["step"] for r in reader.read()] == [1, 2]
    with path.open("a") as f:
        f.write(",0.5,0.01,0.300\n" + row(4))
    assert reader.read() == runlog._steps_rows(path)  # the same rows as a full read
    assert [r["step"] for r in reader.rows] == [1, 2, 3, 4]
    offset = reader._offset
    reader.read()
    assert reader._offset == offset  # nothing new: nothing parsed

    replaced = tmp_path / "new.csv"  # a resumed run rewrites the log (a new file)
    replaced.write_text(HEADER + row(1) + row(2))
    replaced.replace(path)
    assert [r["step"] for r in reader.read()] == [1, 2]
