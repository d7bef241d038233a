"""A language model's output layers (`lstm pretrain --softmax`): the sampled softmax tends to the
full one as its draws grow, never draws or predicts padding, shares its word vectors with the
embedding, and both layers give the exact log-likelihood; runs written before the option existed
keep their adaptive softmax."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.nn.language_model import LanguageModel
from lstmcli.nn.lm_output import SampledSoftmax
from lstmcli.pretrain_config import LanguageModelConfig, PretrainConfig

runner = CliRunner()


def exact_loss(features, targets, weight, bias):
    logits = features @ weight.T + bias  # (N, V)
    logits[:, 0] = -math.inf
    return torch.nn.functional.cross_entropy(logits, targets)


def test_the_sampled_loss_and_gradient_tend_to_the_full_softmax():
    torch.manual_seed(0)
    vocab, dim = 60, 8
    weight = torch.randn(vocab, dim, requires_grad=True)
    features = torch.randn(40, dim, requires_grad=True)
    targets = torch.randint(1, vocab, (40,))
    head = SampledSoftmax(vocab, samples=200_000)
    head.bias.data.normal_()
    exact = exact_loss(features, targets, weight, head.bias)
    exact_grad = torch.autograd.grad(exact, features)[0]
    sampled = head.sampled_loss(features, targets, weight)
    sampled_grad = torch.autograd.grad(sampled, features)[0]
    assert sampled.item() == pytest.approx(exact.item(), rel=0.01)
    cosine = torch.nn.functional.cosine_similarity(sampled_grad.flatten(), exact_grad.flatten(),
                                                   dim=0)
    assert cosine > 0.999
    # A few draws: a rougher estimate, but a loss, never negative, and padding never drawn.
    few = SampledSoftmax(vocab, samples=4)
    assert head.proposal[0] == 0 and few.proposal[0] == 0
    losses = [few.sampled_loss(features, targets, weight).item() for _ in range(50)]
    assert min(losses) >= 0


def test_few_draws_are_exact_where_they_would_cover_the_vocabulary():
    torch.manual_seed(1)
    head = SampledSoftmax(20, samples=64)
    weight, features = torch.randn(20, 4), torch.randn(5, 4)
    targets = torch.tensor([1, 2, 3, 4, 19])
    assert head.loss(features, targets, weight).item() == pytest.approx(
        exact_loss(features, targets, weight, head.bias).item(), rel=1e-6)


def test_the_sampled_softmax_is_tied_to_the_embedding_and_exact_in_evaluation():
    torch.manual_seed(2)
    config = LanguageModelConfig(vocab_size=300, embed_dim=8, hidden_size=8, samples=16)
    model = LanguageModel(config)
    assert set(model.head.state_dict()) == {"bias"}  # the word vectors are the embedding's
    ids = torch.randint(2, 40, (3, 6))  # words 2..39 read; the others only drawn
    lengths = torch.tensor([6, 6, 4])
    model.loss(model(ids, lengths), model.targets(ids, lengths)).backward()
    unread = model.embedding.weight.grad[40:]  # rows only the output layer touches
    assert unread.abs().sum() > 0
    log_probs = model.log_probs(ids, lengths)  # (N, V)
    assert torch.isneginf(log_probs[:, 0]).all()
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(len(log_probs)), atol=1e-5)
    nll = model.nll(ids, lengths)
    chosen = log_probs.gather(1, model.targets(ids, lengths)[:, None]).squeeze(1)
    assert torch.allclose(nll, -chosen, atol=1e-5)


def test_a_run_from_before_the_option_keeps_its_adaptive_softmax():
    stored = PretrainConfig().to_dict()
    del stored["model"]["softmax"], stored["model"]["samples"]
    assert PretrainConfig.from_run(stored).model.softmax == "adaptive"
    assert PretrainConfig.from_dict(stored).model.softmax == "sampled"  # a TOML file's default


def test_both_output_layers_pretrain_and_fine_tune(tmp_path):
    from helpers import make_reviews

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(row["text"] + "\n" for row in make_reviews(60)), encoding="utf-8")
    args = ["pretrain", "--text-file", str(corpus), "--hidden-size", "8", "--embed-dim", "8",
            "--bptt", "8", "--epochs", "1", "--threads", "1", "--json"]
    for softmax in ("sampled", "adaptive"):
        run = tmp_path / softmax
        result = runner.invoke(app, [*args, "--softmax", softmax, "--samples", "8", "-o", str(run)])
        assert result.exit_code == 0, result.output
        heads = (run / "config.json").read_text()
        assert f'"softmax": "{softmax}"' in heads
        tuned = runner.invoke(app, ["train", "--init-from", str(run), "--epochs", "1",
                                    "--threads", "1", "-o", str(tmp_path / f"{softmax}-clf"),
                                    "--json"])
        assert tuned.exit_code == 0, tuned.output


@pytest.mark.parametrize(("flags", "message"), [
    (["--softmax", "full"], "unknown softmax 'full'; choose one of: sampled, adaptive"),
    (["--samples", "0"], "samples must be"),
])
def test_bad_output_layer_settings_are_one_line(flags, message, tmp_path):
    result = runner.invoke(app, ["pretrain", *flags, "-o", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
