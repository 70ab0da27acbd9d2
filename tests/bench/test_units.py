"""The bench as standalone units: claim files, the plan's order and dependencies, `--job`'s refusals, and the worker
pool's failure reports (the tiny bench run with workers and with --job: test_bench.py)."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from prefdistill.bench.plan import SELECTION, SHARED, judged_jobs, plan, selection_jobs
from prefdistill.bench.workers import run_workers, worker_devices
from prefdistill.cli import main
from prefdistill.config.checks import load_bench_config
from prefdistill.config.schema import ConfigError
from prefdistill.models.tiny import tiny_config
from prefdistill.run.claims import Claim, hold, read_holder

# ----------------------------------------------------------------------------- claims


def test_a_claim_is_exclusive_until_released(tmp_path):
    path = tmp_path / "claims" / "job.claim"
    first, second = Claim(path), Claim(path)
    assert first.acquire()
    held = read_holder(path)
    assert (held.pid, held.host) == (os.getpid(), socket.gethostname())
    assert not second.acquire() and first.owned() and not second.owned()
    first.release()
    assert not path.exists()
    assert second.acquire() and second.owned()
    second.release()


def test_of_runners_racing_for_a_claim_exactly_one_gets_it(tmp_path):
    path = tmp_path / "job.claim"
    code = ("import sys, time; from prefdistill.run.claims import Claim\n"
            "while time.time() < float(sys.argv[2]): pass\n"  # start together
            "c = Claim(sys.argv[1]); print(c.acquire(), flush=True); time.sleep(2)")
    start = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), start], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    got = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(got) == ["False", "False", "False", "True"], got


def test_a_killed_runners_claim_is_taken_over(tmp_path):
    path = tmp_path / "job.claim"
    code = "import sys, time; from prefdistill.run.claims import Claim; print(Claim(sys.argv[1]).acquire(), flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "True"
    assert not Claim(path).acquire()  # its runner is alive
    proc.kill()
    proc.wait()
    assert read_holder(path).pid == proc.pid  # still there, fresh, but its pid is dead on this host
    claim = Claim(path)
    assert claim.acquire() and read_holder(path).pid == os.getpid()
    claim.release()


def test_a_claim_not_touched_within_its_expiry_is_stale(tmp_path):
    path = tmp_path / "job.claim"
    # A runner on another machine: its pid cannot be checked here, only its claim's age.
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0.0, "token": "x"}))
    assert not Claim(path, expiry_s=60).acquire()
    os.utime(path, (time.time() - 61, time.time() - 61))
    claim = Claim(path, expiry_s=60)
    assert claim.acquire() and read_holder(path).host == socket.gethostname()
    claim.release()
    with pytest.raises(ValueError, match="positive"):
        Claim(path, expiry_s=0)


def test_a_held_claim_is_refreshed_and_waited_for(tmp_path):
    path = tmp_path / "job.claim"
    claim = Claim(path, expiry_s=0.4)  # heartbeat every 0.1 s
    assert claim.acquire()
    os.utime(path, (time.time() - 100, time.time() - 100))
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 0.35  # the heartbeat touched it: not stale
    assert not Claim(path, expiry_s=0.4).acquire()
    claim.release()
    assert not path.exists()
    # Only the holder releases: another Claim's release leaves it.
    other = Claim(path)
    assert other.acquire()
    Claim(path).release()
    assert other.owned()
    other.release()
    # hold() waits for a live holder to finish, then has it; it releases on leaving, on an error too.
    code = ("import sys, time; from prefdistill.run.claims import Claim; c = Claim(sys.argv[1]); c.acquire(); "
            "print('held', flush=True); time.sleep(1); c.release(); print('released', flush=True); time.sleep(1)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(KeyError):
        with hold(path, poll_s=0.05) as mine:
            assert mine.owned() and read_holder(path).pid == os.getpid()
            assert proc.stdout.readline().strip() == "released"  # it was ours only after the other runner let go
            raise KeyError("the work failed")
    proc.wait()
    assert not path.exists()


# ----------------------------------------------------------------------------- the plan


def _bench(tiny_assets, tmp_path, **extra):
    data = tiny_config(tiny_assets, tmp_path, name="u")
    data["bench"] = {"methods": [{"name": "kd", "method": "kd"}, {"name": "plad", "method": "plad"},
                                 {"name": "seqkd", "method": "seqkd"}],
                     "seeds": [0, 1], "grid": {"lr": [1e-3, 3e-3]}, "data_shares": [0.5], "data_share_methods": ["plad"],
                     "relabel_shares": [1.0], "relabel_method": "plad", **extra}
    return data


def test_the_plan_lists_shared_grid_selection_then_seed_and_figure_jobs(tiny_assets, tmp_path):
    _, bench = load_bench_config(_bench(tiny_assets, tmp_path))
    grid = selection_jobs(bench)
    items = plan(bench, None)
    assert [i.stage for i in items] == [SHARED] + ["grid"] * 6 + [SELECTION] + ["seeds"] * 6 + ["figure"] * 2
    assert items[0].key == SHARED and items[0].needs == ()
    assert [i.key for i in items[1:7]] == [j.key for j in grid] and all(i.needs == (SHARED,) for i in items[1:7])
    assert items[7].key == SELECTION and items[7].needs == tuple(j.key for j in grid)
    # Before the selection the seed and figure jobs have no key: each waits on its own entry's grid.
    for item in items[8:]:
        assert item.pending and item.needs == tuple(j.key for j in grid if j.entry == item.job.entry)
    assert [(i.job.entry, i.job.seed) for i in items[8:14]] == [(e, s) for s in (0, 1) for e in ("kd", "plad", "seqkd")]
    assert [(i.job.data_share, i.job.relabel_share) for i in items[14:]] == [(0.5, 0.0), (1.0, 1.0)]
    # Once chosen: the tested jobs with their keys, after the selection; the first seed's is the chosen grid job.
    chosen = {"kd": (("lr", 3e-3),), "plad": (("lr", 1e-3),), "seqkd": (("lr", 1e-3),)}
    items = plan(bench, chosen)
    tested = [i for i in items if i.stage in ("seeds", "figure")]
    assert [i.key for i in tested] == [j.key for j in judged_jobs(bench, chosen)]
    assert all(i.needs == (SELECTION,) and not i.pending for i in tested)
    assert {i.key for i in tested[:3]} <= {j.key for j in grid}
    assert all(i.job.setting == chosen[i.job.entry] for i in tested)


def test_job_refuses_an_unknown_key_and_one_whose_needs_are_not_done(tiny_assets, tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(_bench(tiny_assets, tmp_path)))
    assert main(["bench", str(config), "--job", "nope-123"]) == 2
    err = capsys.readouterr().err
    assert "--job nope-123: not a job of this bench" in err and "once the selection is made" in err and "--plan" in err
    _, bench = load_bench_config(config)
    first = selection_jobs(bench)[0].key
    assert main(["bench", str(config), "--job", first]) == 2
    assert f"--job {first} needs 1 unit(s) done first: shared" in capsys.readouterr().err
    assert main(["bench", str(config), "--job", SELECTION]) == 2
    err = capsys.readouterr().err
    assert all(j.key in err for j in selection_jobs(bench))  # names every grid job it waits for
    assert main(["bench", str(config), "--plan", "--keys-only", "--stage", "grid"]) == 0
    assert capsys.readouterr().out.split() == [j.key for j in selection_jobs(bench)]
    assert main(["bench", str(config), "--plan", "--job", first]) == 2
    assert main(["bench", str(config), "--workers", "3", "--devices", "cuda:0,cuda:1"]) == 2
    assert "a device for each worker" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the worker pool


def _toy(payload, tasks, report):
    """A worker: 'boom' raises, 'die' kills its process; the others write a file."""
    for key in iter(tasks.get, None):
        report("start", key)
        if key == "die":
            os._exit(3)
        if key == "boom":
            report("failed", key, "ValueError: boom")
            continue
        (payload / key).write_text(str(os.getpid()))
        report("done", key)


def test_workers_run_every_key_once_and_name_the_failed_ones(tmp_path):
    keys = [f"k{i}" for i in range(6)]
    failed = run_workers(_toy, tmp_path, [*keys[:3], "boom", *keys[3:]], workers=2)
    assert [(f.key, f.error) for f in failed] == [("boom", "ValueError: boom")]
    assert sorted(p.name for p in tmp_path.iterdir()) == keys  # the others went on
    failed = run_workers(_toy, tmp_path, ["die", "k9"], workers=1)
    assert [f.key for f in failed] == ["die"] and "exited with code 3" in failed[0].error


def test_worker_devices():
    assert worker_devices(2, None) == [None, None]
    assert worker_devices(2, ["cuda:0", "cuda:1", "cuda:2"]) == ["cuda:0", "cuda:1"]
    with pytest.raises(ConfigError, match="a device for each worker"):
        worker_devices(3, ["cuda:0"])
    with pytest.raises(ConfigError, match="'gpu1' is not cpu or cuda:N"):
        worker_devices(1, ["gpu1"])
    with pytest.raises(ConfigError, match="at least 1"):
        worker_devices(0, None)
