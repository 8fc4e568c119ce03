"""Publishing: `push_folder` / `eqreg-hf push` with the Hub's HTTP calls replaced by recorders."""

from __future__ import annotations

import os
import types

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, PyTorchModelHubMixin
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from torch import nn

from eqreg_hf.cli import main
from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.hub import CardFacts, HubFolderError, HubPushError, push_folder, write_hub_folder


class PushNet(nn.Module, PyTorchModelHubMixin):
    def __init__(self, channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


EXPECTED = {
    "README.md",
    "config.json",
    "model.safetensors",
    "eqreg_config.json",
    "eqreg_model.json",
    "samples/rainy_0.png",
}


@pytest.fixture
def folder(tmp_path):
    facts = CardFacts(task="derain", metrics={"psnr": 30.0, "equivariance_error": 0.1}, dataset="Rain100L")
    path = write_hub_folder(PushNet(), tmp_path / "hub", facts, eqreg_config=EqRegConfig(weight=1e-2))
    # a subfolder is published; editor leftovers and temp files are not
    os.makedirs(os.path.join(path, "samples"))
    open(os.path.join(path, "samples", "rainy_0.png"), "wb").write(b"\x89PNG fake")
    open(os.path.join(path, ".DS_Store"), "wb").write(b"junk")
    open(os.path.join(path, "notes.tmp"), "w").write("junk")
    return path


class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []

    def names(self):
        return [c[0] for c in self.calls]

    def get(self, name):
        found = [c for c in self.calls if c[0] == name]
        assert len(found) == 1, f"{name} called {len(found)} times"
        return found[0]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Every HfApi call that talks to the Hub is recorded; nothing leaves the machine."""
    rec = Recorder()

    def record(name, result=None):
        def fn(self, *args, **kwargs):
            rec.calls.append((name, args, kwargs))
            return result

        return fn

    commit = types.SimpleNamespace(commit_url="https://huggingface.co/me/m/commit/abc123")
    monkeypatch.setattr(HfApi, "create_repo", record("create_repo"))
    monkeypatch.setattr(HfApi, "create_branch", record("create_branch"))
    monkeypatch.setattr(HfApi, "create_commit", record("create_commit", commit))
    monkeypatch.setattr(HfApi, "upload_folder", record("upload_folder", commit))
    monkeypatch.setattr(HfApi, "upload_file", record("upload_file", commit))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    return rec


def _check_commit(rec, folder, repo_id, private, revision, message):
    assert rec.names() == ["create_repo"] + (["create_branch"] if revision else []) + ["create_commit"]
    _, args, kw = rec.get("create_repo")
    assert args == (repo_id,) and kw["private"] is private and kw["exist_ok"] is True
    if revision:
        _, args, kw = rec.get("create_branch")
        assert args == (repo_id,) and kw["branch"] == revision and kw["exist_ok"] is True
    _, _, kw = rec.get("create_commit")  # ONE commit with every file
    assert kw["repo_id"] == repo_id and kw["revision"] == revision and kw["commit_message"] == message
    ops = kw["operations"]
    assert {op.path_in_repo for op in ops} == EXPECTED
    assert len(ops) == len(EXPECTED)
    for op in ops:
        with open(os.path.join(folder, op.path_in_repo), "rb") as fh:
            saved = fh.read()
        if op.path_in_repo == "README.md":  # the card's usage snippet names the repo it was pushed to
            assert b"YOUR_USER/" in saved and isinstance(op.path_or_fileobj, bytes)
            assert op.path_or_fileobj == saved.replace(
                b"YOUR_USER/" + saved.split(b"YOUR_USER/")[1].split(b'"')[0], repo_id.encode()
            )
            assert f'snapshot_download("{repo_id}")'.encode() in op.path_or_fileobj
        else:
            assert saved == open(op.path_or_fileobj, "rb").read()


PUSHES = [
    # (repo_id, private, revision, commit message)
    ("me/derain-eqreg", False, None, None),
    ("org/derain-eqreg", True, "c8-sweep", "C8, λ=1e-2"),
    ("me/x", True, None, "only private"),
]


@pytest.mark.parametrize("repo_id,private,revision,message", PUSHES)
def test_push_folder_one_commit(folder, hub, repo_id, private, revision, message):
    url = push_folder(folder, repo_id, private=private, revision=revision, commit_message=message)
    assert url.endswith("abc123")
    _check_commit(hub, folder, repo_id, private, revision, message or "Upload EQ-Reg model with eqreg-hf")


@pytest.mark.parametrize("repo_id,private,revision,message", PUSHES)
def test_cli_push(folder, hub, capsys, repo_id, private, revision, message):
    argv = ["push", folder, repo_id]
    argv += ["--private"] if private else []
    argv += ["--revision", revision] if revision else []
    argv += ["--commit-message", message] if message else []
    assert main(argv) == 0
    _check_commit(hub, folder, repo_id, private, revision, message or "Upload EQ-Reg model with eqreg-hf")
    assert repo_id in capsys.readouterr().out


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("eqreg-hf push: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_offline_env(folder, hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", folder, "me/m"]) == 1
    assert "HF_HUB_OFFLINE" in _one_line_error(capsys)
    assert hub.calls == []


@pytest.mark.parametrize(
    "env, constant, expected",
    [
        ("1", False, True),
        (" on ", False, True),
        ("Yes", False, True),
        ("TRUE", False, True),
        ("0", False, False),
        ("", False, False),
        ("", True, True),
    ],
)
def test_hub_offline_reads_the_variable_and_the_constant(monkeypatch, env, constant, expected):
    from eqreg_hf.hub import hub_offline
    from eqreg_hf.tasks.classify.networks import hub_reachable

    monkeypatch.setenv("HF_HUB_OFFLINE", env)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", constant)
    assert hub_offline() is expected
    if expected:  # the classifier's probe asks the same question and never touches the network
        assert hub_reachable() is False


def test_push_refused_when_the_constant_says_offline(folder, hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE"):
        push_folder(folder, "me/m")
    assert hub.calls == []


def test_offline_raised_by_huggingface_hub(folder, hub, capsys, monkeypatch):
    def offline(self, *a, **k):
        raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    assert main(["push", folder, "me/m"]) == 1
    assert "offline" in _one_line_error(capsys)
    assert "create_commit" not in hub.names()


def test_missing_token(folder, hub, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert huggingface_hub.get_token() is None  # the setup really has no token
    assert main(["push", folder, "me/m"]) == 1
    assert "hf auth login" in _one_line_error(capsys)
    assert hub.calls == []


def test_hub_refuses(folder, hub, capsys, monkeypatch):
    response = types.SimpleNamespace(status_code=403, headers={}, request=None)

    def forbidden(self, *a, **k):
        raise HfHubHTTPError(
            "403 Forbidden: you don't have the rights to create a model under this namespace",
            response=response,
        )

    monkeypatch.setattr(HfApi, "create_repo", forbidden)
    assert main(["push", folder, "someone-else/m"]) == 1
    err = _one_line_error(capsys)
    assert "HTTP 403" in err and "write access" in err
    assert "create_commit" not in hub.names()


def test_network_failure_commits_nothing(folder, hub, capsys, monkeypatch):
    def unreachable(self, *a, **k):
        raise ConnectionError("[Errno 111] Connection refused")

    monkeypatch.setattr(HfApi, "create_commit", unreachable)
    assert main(["push", folder, "me/m"]) == 1
    err = _one_line_error(capsys)
    assert "Could not reach the Hub" in err and "nothing was committed" in err


def _remove(name):
    def fn(path):
        os.remove(os.path.join(path, name))

    return fn


def _write(name, text):
    def fn(path):
        with open(os.path.join(path, name), "w") as fh:
            fh.write(text)

    return fn


BROKEN = [
    ("no-weights", _remove("model.safetensors"), "model.safetensors"),
    ("no-card", _remove("README.md"), "README.md"),
    ("no-config", _remove("config.json"), "config.json"),
    ("no-eqreg-config", _remove("eqreg_config.json"), "eqreg_config.json"),
    ("bad-eqreg-json", _write("eqreg_config.json", "{not json"), "eqreg_config.json"),
    ("bad-eqreg-field", _write("eqreg_config.json", '{"distance": "cosine"}'), "cosine"),
    ("bad-card-yaml", _write("README.md", "---\nmodel-index: [\n---\n# card\n"), "README.md"),
]


@pytest.mark.parametrize("case,breaker,needle", BROKEN, ids=[b[0] for b in BROKEN])
def test_incomplete_folder_is_refused_before_upload(folder, hub, capsys, case, breaker, needle):
    breaker(folder)
    with pytest.raises(HubFolderError, match=needle.replace(".", r"\.")):
        push_folder(folder, "me/m")
    assert main(["push", folder, "me/m"]) == 2  # bad input: 2 (the Hub refusing is 1)
    assert needle in _one_line_error(capsys)
    assert hub.calls == []


def test_missing_folder_and_bad_repo_id(tmp_path, hub, capsys):
    assert main(["push", str(tmp_path / "nope"), "me/m"]) == 2
    assert "write_hub_folder" in _one_line_error(capsys)
    with pytest.raises(ValueError, match="user/name"):
        push_folder(tmp_path, "a/b/c")
    assert hub.calls == []


def test_pushed_bytes_are_the_saved_weights(folder, hub):
    # the weights in the commit are the model's, not a re-serialisation
    from safetensors.torch import load_file

    push_folder(folder, "me/m")
    op = next(o for o in hub.get("create_commit")[2]["operations"] if o.path_in_repo == "model.safetensors")
    tensors = load_file(op.path_or_fileobj)
    assert set(tensors) == {"conv.weight", "conv.bias"} and tensors["conv.weight"].shape == torch.Size(
        [4, 3, 3, 3]
    )
