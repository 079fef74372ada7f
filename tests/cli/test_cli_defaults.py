"""`--version`, every default in `--help`, the embedded model's names, the chat default from the tokenizer."""

from __future__ import annotations

import argparse
import os
import shutil

import pytest

from stepscope.cli.main import build_parser, main
from stepscope.tracer import __version__
from stepscope.tracer.model_info import chat_default
from stepscope.tracer.model_spec import DEFAULT_NAME, default_alias, default_gguf_path
from tests.support.tiny_models import CHAT_TEMPLATE, byte_tokenizer


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"stepscope {__version__}"


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_help_shows_every_default():
    parser = build_parser()
    for name, sub in [("stepscope", parser), *_subparsers(parser)]:
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)) or action.required:
                continue
            text = formatter._expand_help(action) if action.help else ""
            assert "default" in text, f"{name} {action.option_strings or action.dest}: {text!r}"
    help_text = next(s for n, s in _subparsers(parser) if n == "trace").format_help()
    assert "(default: 16)" in help_text and "SmolLM2-135M-Instruct" in help_text


@pytest.mark.parametrize("spec", ["smollm2", "SmolLM2-135M-Instruct", "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", None])
def test_embedded_model_names(spec):
    assert default_alias(spec)


def test_a_directory_named_like_the_alias_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2").mkdir()
    assert not default_alias("smollm2")
    assert not default_alias("SmolLM2-135M")


def test_info_by_the_header_name(capsys):
    assert main(["info", DEFAULT_NAME]) == 0
    out = capsys.readouterr().out
    assert "134,515,008" in out and "Q4_1" in out


def test_chat_default_follows_the_tokenizer(tmp_path):
    """An instruct tokenizer (template whose turns end with EOS) is chat, whatever the directory's name."""
    base = byte_tokenizer(chat=True)  # a template, but generation stops at <|endoftext|>, not at a turn end
    assert not chat_default(base)
    assert not chat_default(byte_tokenizer(chat=False))
    instruct = byte_tokenizer(chat=True)
    instruct.eos_token = "<|im_end|>"
    assert instruct.chat_template == CHAT_TEMPLATE and chat_default(instruct)


def test_local_copy_of_the_instruct_model_is_still_instruct(tmp_path, smollm2_cache):
    """A copy of SmolLM2-135M-Instruct's tokenizer in a directory named `bars-smol-hf` defaults to chat."""
    from transformers import AutoTokenizer

    cached = smollm2_cache
    copy = tmp_path / "bars-smol-hf"
    copy.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if os.path.exists(os.path.join(cached, name)):
            shutil.copy(os.path.join(cached, name), copy / name)
    tok = AutoTokenizer.from_pretrained(str(copy))
    assert chat_default(tok)
    from stepscope.tracer.session import wants_chat

    assert wants_chat(tok, None) and not wants_chat(tok, False)


def test_weights_origin_of_the_embedded_model():
    import torch

    from stepscope.tracer.model_info import weights_origin

    class Loaded:
        dtype = torch.float32

    assert weights_origin(default_gguf_path(), Loaded()) == "GGUF Q4_1, dequantised to float32"
    assert weights_origin("/some/model/dir", Loaded()) is None


def test_info_on_a_trace_says_where_the_weights_came_from(tmp_path, capsys):
    from tests.support.paths import FIXTURE as src
    from tests.support.trace_edit import edit_manifest

    dst = tmp_path / "t"
    shutil.copytree(src, dst)
    edit_manifest(str(dst), lambda m: m["model"].update(weights="GGUF Q4_1, dequantised to float32"))  # re-stamped
    assert main(["info", str(dst)]) == 0
    assert "GGUF Q4_1, dequantised to float32" in capsys.readouterr().out
