"""The README stays true: its test command is what CI runs, its tables match the code."""
import re
from pathlib import Path

import pytest

from prefdistill.cli import main, packaged_config
from prefdistill.methods import METHODS

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def _readme_test_command() -> str:
    section = README.split("## Tests", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert _readme_test_command() == "python -m pytest -q"
    assert ci_lines[-1] == _readme_test_command()
    assert any("scripts/setup.sh" in line for line in ci_lines)


def test_methods_table_matches_registry():
    section = README.split("## Methods", 1)[1]
    names = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert names == set(METHODS)


def test_across_tokenizers_list_matches_registry():
    """One source for the methods that work across tokenizers: the registry; the README's list and table agree."""
    from prefdistill.methods.registry import across_tokenizers

    section = README.split("## Methods", 1)[1]
    from prefdistill.methods import METHODS

    listed = re.search(r"The methods that never compare token distributions\s*\(([^)]*)\)", section, re.S).group(1)
    assert re.findall(r"`(\w+)`", listed) == across_tokenizers()
    any_vocabulary = set(re.findall(r"^\| `(\w+)` \| [^|]+ \| any \|", section, re.M))
    assert any_vocabulary == set(across_tokenizers())
    aligned = set(re.findall(r"^\| `(\w+)` \| [^|]+ \| aligned \|", section, re.M))  # the token-level ones, aligned
    assert aligned == {n for n, s in METHODS.items() if "teacher" in s.needs} and aligned


def test_readme_config_keys_exist(capsys, tmp_path):
    """The README's example YAML passes validation (models are not loaded by `config`)."""
    block = re.search(r"A minimal `my.yaml`:\n\n```yaml\n(.+?)```", README, re.S).group(1)
    path = tmp_path / "my.yaml"
    path.write_text(block)
    assert main(["config", str(path)]) == 0
    assert "tldr-plad" in capsys.readouterr().out


def test_quickstart_commands_in_quick_form(capsys):
    assert main(["config", str(packaged_config("demo")), "distill.params.beta=0.5"]) == 0
    assert "beta: 0.5" in capsys.readouterr().out
    assert main(["methods"]) == 0
    assert "plad" in capsys.readouterr().out


def test_a_folder_named_like_a_packaged_config_does_not_hide_it(tmp_path, monkeypatch):
    """`prefdistill bench bench` run where the run folder `bench/` exists still means the packaged bench.yaml."""
    from prefdistill.cli import _config_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench").mkdir()
    assert _config_source("bench") == packaged_config("bench")
    (tmp_path / "mine.yaml").write_text("name: x\n")
    assert _config_source("mine.yaml") == "mine.yaml"


@pytest.mark.parametrize("name", ["bench", "bench_token", "bench_winrate", "bench_topk", "bench_tldr", "bench_cross"])
def test_packaged_bench_configs_pass_their_checks_in_full_and_quick_form(name):
    """Every shipped bench config, and its --quick form where it has one, passes every config rule."""
    from prefdistill.config.checks import load_bench_config

    cfg, bench = load_bench_config(packaged_config(name))
    assert bench.methods and cfg.name
    if bench.quick:
        quick_cfg, quick = load_bench_config(packaged_config(name), quick=True)
        assert quick_cfg.name == f"{cfg.name}-quick" and [m.name for m in quick.methods] == [m.name for m in bench.methods]
