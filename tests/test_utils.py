import numpy as np
import pytest
import torch

from modalsurv.errors import DataError, Problem
from modalsurv.utils import atomic_path, atomic_write_text, set_seed


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_atomic_write_behaves_as_open_for_links_and_modes(tmp_path):
    """A rewritten file keeps its permissions and a symlink stays a link, written through,
    as with a plain ``open(path, "w")`` (the rename replaced the link and reset the mode)."""
    import os

    target = tmp_path / "data" / "predictions.csv"
    atomic_write_text(target, "old")
    os.chmod(target, 0o640)
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["predictions.csv"]


def test_atomic_write_flushes_the_data_before_the_rename(tmp_path, monkeypatch):
    """Without an fsync before the rename, a power cut can leave the name on an empty file."""
    import os

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync")
        return real_fsync(fd)

    def replace(a, b):
        events.append("replace")
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(tmp_path / "f.txt", "x")
    assert events[:2] == ["fsync", "replace"]


def test_set_seed_controls_numpy_and_torch():
    g1 = set_seed(3)
    a = (g1.normal(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    g2 = set_seed(3)
    b = (g2.normal(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    assert a == b


def test_error_message_names_where():
    e = DataError("expected a number, found 'abc'", path="x.json", patient="P1", field="age")
    assert str(e) == "file x.json; patient 'P1'; field 'age': expected a number, found 'abc'"
    p = Problem("warning", "label leak column ignored", "c.json", "P2", "BCR_PSA")
    assert str(p).startswith("[warning] file c.json; patient 'P2'; field 'BCR_PSA'")


def test_exclusive_lock_names_the_holder_and_is_released(tmp_path):
    import subprocess
    import sys

    from modalsurv.errors import LockedError
    from modalsurv.utils import exclusive_lock

    with exclusive_lock(tmp_path, "run folder"):
        # a second process cannot take it and is told who holds it
        code = ("import sys; from modalsurv.utils import exclusive_lock\n"
                f"with exclusive_lock({str(tmp_path)!r}, 'run folder'): pass")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode != 0
        assert "LockedError" in out.stderr and "PID" in out.stderr
        with pytest.raises(LockedError, match="in use by another modalsurv process"):
            with exclusive_lock(tmp_path):  # a second open file description conflicts too
                pass
    with exclusive_lock(tmp_path):  # released on exit
        pass


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    import subprocess
    import sys

    from modalsurv.utils import exclusive_lock

    code = ("import time; from modalsurv.utils import exclusive_lock\n"
            f"with exclusive_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    with exclusive_lock(tmp_path):
        pass


def test_require_names_the_extra():
    from modalsurv.errors import MissingDependencyError
    from modalsurv.utils import require

    assert require("json", "reading").dumps([1]) == "[1]"
    with pytest.raises(MissingDependencyError, match=r"pip install 'modalsurv\[features\]'"):
        require("timm.not_a_module_xyz", "the UNI tile encoder")


def test_staged_folder_removes_a_killed_builds_leftovers_but_not_a_live_ones(tmp_path):
    """A SIGKILLed export-model / case-input left '.NAME.partial-PID' for ever; the next
    build beside the same name removes it, and never a live process's."""
    import os
    import subprocess
    import sys

    from modalsurv.utils import staged_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    killed = tmp_path / f".model.partial-{dead}"
    live = tmp_path / f".model.partial-{os.getppid()}"
    other = tmp_path / f".other.partial-{dead}"
    for d in (killed, live, other):
        (d / "x").mkdir(parents=True)
    with staged_folder(tmp_path / "model") as staging:
        assert staging.is_dir() and not killed.exists()
    assert live.is_dir() and other.is_dir() and not staging.exists()


def test_a_yaml_file_not_in_utf8_is_a_config_error_naming_it(tmp_path):
    """Was: an internal error (UnicodeDecodeError, exit 3). A byte-order mark is fine."""
    from modalsurv.errors import ConfigError
    from modalsurv.utils import read_yaml_mapping

    latin = tmp_path / "cfg.yaml"
    latin.write_bytes("train:\n  note: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"cfg.yaml is not UTF-8 text .*save it as UTF-8"):
        read_yaml_mapping(latin)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufefftrain:\n  epochs: 3\n".encode())
    assert read_yaml_mapping(bom) == {"train": {"epochs": 3}}


def test_yaml_merge_keys_are_read_as_yaml_defines_them(tmp_path):
    """``<<: *defaults`` was refused ('could not determine a constructor for the tag
    merge') by the loader that refuses a key given twice; a key given twice still is."""
    from modalsurv.errors import ConfigError
    from modalsurv.utils import read_yaml_mapping

    merged = tmp_path / "grid.yaml"
    merged.write_text("short: &short {epochs: 3, patience: 2}\n"
                      "train:\n  <<: *short\n  epochs: 5\n"
                      "model:\n  <<: [{fusion: concat}, {n_bins: 10}]\n")  # fmt: skip
    assert read_yaml_mapping(merged) == {"short": {"epochs": 3, "patience": 2},
                                         "train": {"epochs": 5, "patience": 2},
                                         "model": {"fusion": "concat", "n_bins": 10}}  # fmt: skip
    twice = tmp_path / "twice.yaml"
    twice.write_text("short: &short {epochs: 3}\ntrain:\n  <<: *short\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match="'lr' given twice"):
        read_yaml_mapping(twice)


def test_the_lock_file_takes_the_umask_as_every_other_file(tmp_path):
    """It was created 0644 whatever the umask: in a folder a group shares (umask 002, the
    run's files 0664) a colleague could not open it to resume the run."""
    import os
    import stat

    from modalsurv.utils import exclusive_lock

    old = os.umask(0o002)
    try:
        with exclusive_lock(tmp_path) as lock:
            mode = stat.S_IMODE(lock.stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o664


def test_a_lock_file_this_user_may_not_write_still_locks(tmp_path, monkeypatch):
    """Another user's 0644 lock file (kept from before the fix above) gave a bare
    PermissionError; flock needs no write access, so the folder is locked all the same."""
    import os

    from modalsurv.errors import LockedError
    from modalsurv.utils import exclusive_lock

    (tmp_path / ".modalsurv.lock").write_text("")
    real_open = os.open

    def no_write(path, flags, *args, **kwargs):  # root's tests cannot chmod a file away
        if str(path).endswith(".modalsurv.lock") and flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_write)
    with exclusive_lock(tmp_path, "run folder"):
        with pytest.raises(LockedError, match="in use by another modalsurv process"):
            with exclusive_lock(tmp_path, "run folder"):
                pass
    with exclusive_lock(tmp_path):  # released on exit
        pass


def test_a_yaml_syntax_error_points_into_the_file_and_names_a_tab(tmp_path):
    """The position read 'in "<unicode string>", line 2'; a tab (an editor's indent) got no
    word on what to change."""
    from modalsurv.errors import ConfigError
    from modalsurv.utils import read_yaml_mapping

    tabbed = tmp_path / "run.yaml"
    tabbed.write_text("train:\n\tepochs: 3\n")
    with pytest.raises(ConfigError) as err:
        read_yaml_mapping(tabbed)
    msg = str(err.value)
    assert f'in "{tabbed}", line 2, column 1' in msg and "<unicode string>" not in msg
    assert "a tab character, which YAML refuses there: use spaces" in msg
    tabbed.write_text("train:\n  epochs: 3\nnote: 'a\ttab inside quotes is text'\n")
    assert read_yaml_mapping(tabbed)["note"] == "a\ttab inside quotes is text"


def test_require_tells_an_installed_package_that_fails_to_import_from_a_missing_one(
        tmp_path, monkeypatch):  # fmt: skip
    """A package installed but broken (a version that does not fit torch, a dependency of
    its own missing) was reported 'not installed', so reinstalling the extra changed
    nothing; the message now says it is installed and why its import failed."""
    from modalsurv.errors import MissingDependencyError
    from modalsurv.utils import require

    pkg = tmp_path / "brokenpkg_xyz"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import not_a_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError, match="installed but cannot be imported") as e:
        require("brokenpkg_xyz", "the test encoder")
    assert "not_a_dependency_xyz" in str(e.value) and "not installed" not in str(e.value)
    with pytest.raises(MissingDependencyError, match="which is not installed"):
        require("absentpkg_xyz", "the test encoder")


def test_a_list_as_a_yaml_key_is_a_config_error(tmp_path):
    """The duplicate-key check hashed every key, so a list written as a key raised a bare
    TypeError (an 'internal error') instead of the ConfigError naming the file."""
    from modalsurv.errors import ConfigError
    from modalsurv.utils import read_yaml_mapping

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  [wsi, rna]: 1\n")
    with pytest.raises(ConfigError, match=r"(?s)c\.yaml.*unhashable key"):
        read_yaml_mapping(path)


def test_a_folder_given_as_a_yaml_file_is_a_config_error_naming_it(tmp_path):
    """Was: IsADirectoryError, shown as an internal error (e.g. `--data` or a grid's base
    given a run folder instead of its config.yaml)."""
    from modalsurv.errors import ConfigError
    from modalsurv.utils import read_yaml_mapping

    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match=r"config file .*run is a folder; give the YAML file"):
        read_yaml_mapping(tmp_path / "run")
