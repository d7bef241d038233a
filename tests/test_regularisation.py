"""The from-scratch recipe options: AWD-LSTM's dropouts (word types, locked, between layers,
DropConnect on W_hh without leaving the fast paths), concat pooling, label smoothing, AdamW and
which end of a long text is kept. Each is off by default and then changes nothing."""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest
import torch
from test_cli import assert_clean_error
from test_resume import assert_resumes_bitwise, interrupt_at
from torch import nn
from typer.testing import CliRunner

from lstmcli.cli import app
from lstmcli.config import Config, ModelConfig, TrainConfig, load_config
from lstmcli.data.splits import load_splits
from lstmcli.data.tokenizer import Tokenizer, encode_cached, truncate
from lstmcli.errors import ConfigError
from lstmcli.inference.explain import explain
from lstmcli.inference.predictor import Predictor
from lstmcli.nn import recurrent
from lstmcli.nn.cells import cell_names
from lstmcli.nn.classifier import SentimentClassifier
from lstmcli.nn.dropout import EmbeddingDropout, LockedDropout
from lstmcli.nn.layout import expected_shapes
from lstmcli.nn.recurrent import CellModule, Recurrence, RecurrentEncoder, run_stepwise
from lstmcli.runload import load_run
from lstmcli.training.optim import make_optimizer, training_loss

from helpers import FILLER, make_reviews, write_jsonl

runner = CliRunner()
LENGTHS = torch.tensor([7, 3, 5, 1, 7, 2])  # unsorted, ties, a length-1 row, padding
STEPS = 8
RECIPE = ["--embed-dropout", "0.1", "--input-dropout", "0.2", "--layers", "2",
          "--hidden-dropout", "0.25", "--weight-dropout", "0.3", "--pooling", "concat",
          "--label-smoothing", "0.1", "--optimizer", "adamw", "--weight-decay", "0.01",
          "--truncation", "both"]


# --- configuration --------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["embed_dropout", "input_dropout", "hidden_dropout",
                                 "weight_dropout"])
@pytest.mark.parametrize("value", [-0.1, 1.0, math.nan])
def test_each_dropout_must_be_a_probability_below_one(key, value):
    config = ModelConfig(layers=2, **{key: value})
    with pytest.raises(ConfigError, match=rf"^{key} must be in \[0, 1\), got"):
        config.validate()


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "label_smoothing", 1.0, "label_smoothing must be in [0, 1), got 1.0"),
    ("train", "label_smoothing", math.nan, "label_smoothing must be in [0, 1), got nan"),
    ("train", "optimizer", "sgd", "unknown optimizer 'sgd'; choose one of: adam, adamw"),
    ("data", "truncation", "middle", "unknown truncation 'middle'; choose one of: head, tail, "
     "both"),
    ("model", "pooling", "sum", "unknown pooling 'sum'; choose one of: last, mean, max, concat"),
])
def test_bad_recipe_values_are_one_clear_error(section, key, value, message):
    config = Config()
    setattr(getattr(config, section), key, value)
    with pytest.raises(ConfigError) as caught:
        config.validate()
    assert str(caught.value).startswith(message)


def test_hidden_dropout_needs_a_second_layer(tiny_file, tmp_path):
    result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output",
                                 str(tmp_path / "run"), "--hidden-dropout", "0.2"])
    assert_clean_error(result, "hidden_dropout acts between stacked layers")
    assert "--layers 2" in result.output and result.exit_code == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--weight-dropout", "1"], "weight_dropout must be in [0, 1)"),
    (["--embed-dropout", "nan"], "embed_dropout must be in [0, 1)"),
    (["--label-smoothing", "-0.1"], "label_smoothing must be in [0, 1)"),
    (["--optimizer", "sgd"], "unknown optimizer 'sgd'"),
    (["--truncation", "middle"], "unknown truncation 'middle'"),
])
def test_bad_recipe_flags_exit_2_with_one_line_and_leave_nothing(flags, fragment, tiny_file,
                                                                 tmp_path):
    result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output",
                                 str(tmp_path / "run"), *flags])
    assert_clean_error(result, fragment)
    assert result.exit_code == 2 and not (tmp_path / "run").exists()


def test_the_recipe_keys_load_from_toml(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('[model]\nlayers = 2\nembed_dropout = 0.1\ninput_dropout = 0.2\n'
                    'hidden_dropout = 0.3\nweight_dropout = 0.4\npooling = "concat"\n'
                    '[data]\ntruncation = "tail"\n'
                    '[train]\noptimizer = "adamw"\nlabel_smoothing = 0.1\n')
    config = load_config(path).validate()
    assert (config.model.embed_dropout, config.model.input_dropout, config.model.hidden_dropout,
            config.model.weight_dropout) == (0.1, 0.2, 0.3, 0.4)
    assert config.model.pooling == "concat" and config.data.truncation == "tail"
    assert config.train.optimizer == "adamw" and config.train.label_smoothing == 0.1


def test_a_run_saved_before_the_recipe_options_loads_with_todays_behaviour():
    old = {"model": {"cell": "lstm", "dropout": 0.3, "pooling": "max"},
           "data": {"max_len": 80}, "train": {"lr": 0.005}}
    config = Config.from_dict(old).validate()
    assert (config.model.embed_dropout, config.model.input_dropout, config.model.hidden_dropout,
            config.model.weight_dropout) == (0.0, 0.0, 0.0, 0.0)
    assert config.data.truncation == "head"
    assert config.train.optimizer == "adam" and config.train.label_smoothing == 0.0


# --- defaults change nothing ----------------------------------------------------------------

@pytest.mark.parametrize("cell", cell_names())
def test_with_the_new_options_off_training_draws_no_random_numbers(cell):
    """Dropout 0 everywhere: a training-mode forward and backward leave torch's generator as it
    was, so seeded runs train exactly as before the options existed (the parameters too)."""
    config = ModelConfig(cell=cell, vocab_size=30, embed_dim=4, hidden_size=5, layers=2,
                         bidirectional=True)
    torch.manual_seed(0)
    model = SentimentClassifier(config).train()
    keys = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert keys == expected_shapes(config)
    ids = torch.randint(1, 30, (len(LENGTHS), STEPS))
    before = torch.get_rng_state()
    model(ids, LENGTHS).sum().backward()
    assert torch.equal(torch.get_rng_state(), before)


# --- weight dropout (DropConnect on W_hh) ---------------------------------------------------

def random_cell(name: str, p: float, seed: int = 0) -> CellModule:
    torch.manual_seed(seed)
    cell = CellModule(name, 5, 6, weight_dropout=p).double()
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.normal_(0, 0.5)
    return cell


def outputs_and_gradients(cell: CellModule, x: torch.Tensor, outputs: torch.Tensor,
                          weights_: torch.Tensor) -> list[torch.Tensor]:
    loss = (outputs * weights_).sum()
    return [outputs, *torch.autograd.grad(loss, [x, *cell.parameters()])]


@pytest.mark.parametrize("name", cell_names())
def test_weight_dropout_is_the_identity_in_eval_mode(name):
    cell = random_cell(name, 0.5).eval()
    plain = random_cell(name, 0.0).eval()
    x = torch.randn(len(LENGTHS), STEPS, 5, dtype=torch.float64)
    assert torch.equal(cell.run_fused(x, LENGTHS), plain.run_fused(x, LENGTHS))
    assert torch.equal(run_stepwise(cell, x, LENGTHS)[0], run_stepwise(plain, x, LENGTHS)[0])


@pytest.mark.parametrize("name", cell_names())
def test_weight_dropout_fast_path_equals_the_stepwise_reference_with_the_same_mask(name):
    """From the same random state both paths drop the same entries of W_hh, once for every
    step: outputs and every gradient agree, and differ from the undropped cell."""
    cell = random_cell(name, 0.4).train()
    x = torch.randn(len(LENGTHS), STEPS, 5, dtype=torch.float64, requires_grad=True)
    weights_ = torch.randn(len(LENGTHS), STEPS, 6, dtype=torch.float64)
    torch.manual_seed(7)
    fast = outputs_and_gradients(cell, x, cell.run_fused(x, LENGTHS), weights_)
    torch.manual_seed(7)
    reference = outputs_and_gradients(cell, x, run_stepwise(cell, x, LENGTHS)[0], weights_)
    assert max(float((a - b).detach().abs().max())
               for a, b in zip(fast, reference, strict=True)) < 1e-10
    undropped = run_stepwise(cell.eval(), x, LENGTHS)[0]
    assert float((fast[0] - undropped).detach().abs().max()) > 1e-3
    cell.train()
    torch.manual_seed(8)  # a fresh mask per pass
    assert not torch.equal(cell.run_fused(x, LENGTHS), fast[0])


@pytest.mark.parametrize("name", cell_names())
def test_weight_dropout_trains_on_the_fast_path(name, monkeypatch):
    """No silent fallback to the step-wise loop: it is made to fail, and training still runs,
    reading a dropped W_hh."""
    def refuse(*args, **kwargs):
        raise AssertionError("the step-wise path ran")

    monkeypatch.setattr(recurrent, "run_stepwise", refuse)
    recurrence = Recurrence(random_cell(name, 0.5)).train()
    assert not recurrence.stepwise
    seen = []
    original = CellModule.pass_params

    def spy(self):
        params = original(self)
        seen.append(params.weight_hh is not self.weight_hh)
        return params

    monkeypatch.setattr(CellModule, "pass_params", spy)
    x = torch.randn(len(LENGTHS), STEPS, 5, dtype=torch.float64)
    recurrence(x, LENGTHS)[0].sum().backward()
    assert seen == [True]


@pytest.mark.parametrize("name", cell_names())
def test_weight_dropout_gradients_reach_only_the_kept_entries(name, monkeypatch):
    p = 0.5
    cell = random_cell(name, p).train()
    dropped = {}
    original = CellModule.pass_params

    def keep(self):
        params = original(self)
        params.weight_hh.retain_grad()
        dropped["weight_hh"] = params.weight_hh
        return params

    monkeypatch.setattr(CellModule, "pass_params", keep)
    x = torch.randn(len(LENGTHS), STEPS, 5, dtype=torch.float64)
    (cell.run_fused(x, LENGTHS) * torch.randn(len(LENGTHS), STEPS, 6)).sum().backward()
    weight_hh, used = cell.weight_hh, dropped["weight_hh"]
    kept = used != 0
    assert 0.2 < kept.double().mean() < 0.8
    assert torch.equal(used[kept], weight_hh[kept] / (1 - p))
    assert (weight_hh.grad[~kept] == 0).all()
    assert (weight_hh.grad[kept] != 0).float().mean() > 0.9
    assert torch.allclose(weight_hh.grad, used.grad * kept / (1 - p), rtol=0, atol=1e-12)


# --- embedding, input and hidden dropout ----------------------------------------------------

def test_embedding_dropout_drops_whole_word_types():
    torch.manual_seed(0)
    drop = EmbeddingDropout(0.5, vocab_size=400).train()
    ids = torch.randint(1, 400, (16, 50))  # every word occurs several times
    out = drop(ids, torch.ones(16, 50, 3))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    for word in ids.unique().tolist():
        assert out[ids == word].unique().numel() == 1  # all its occurrences alike
    assert 0.35 < (out[..., 0] == 0).float().mean() < 0.65
    embedded = torch.randn(16, 50, 3)
    assert drop.eval()(ids, embedded) is embedded


def test_locked_dropout_keeps_one_mask_for_every_step():
    torch.manual_seed(0)
    drop = LockedDropout(0.25).train()
    out = drop(torch.ones(8, 30, 40))
    assert set(out.unique().tolist()) == {0.0, float(torch.tensor(4 / 3))}
    assert (out == out[:, :1]).all()
    assert 0.15 < (out[:, 0] == 0).float().mean() < 0.35
    x = torch.randn(2, 3, 4)
    assert drop.eval()(x) is x


def capture_input(module: torch.nn.Module) -> list[torch.Tensor]:
    captured: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda _, args: captured.append(args[0].detach()))
    return captured


def test_the_classifier_applies_input_and_hidden_dropout_locked():
    """What the first layer and the second layer read: zero for a whole text in the same units
    (locked), never at one step only."""
    config = ModelConfig(vocab_size=50, embed_dim=16, hidden_size=16, layers=2,
                         input_dropout=0.5, hidden_dropout=0.5)
    torch.manual_seed(0)
    model = SentimentClassifier(config).train()
    first, second = capture_input(model.encoder), capture_input(model.encoder.layers[1][0])
    ids = torch.randint(1, 50, (6, 9))
    lengths = torch.full((6,), 9)
    model(ids, lengths)
    for x in (first[0], second[0]):
        zero = x == 0  # (B, T, F)
        assert zero.any() and (zero == zero[:, :1]).all()
    model.eval()
    model(ids, lengths)
    assert not (first[1] == 0).any() and not (second[1] == 0).any()


def test_every_dropout_is_off_in_eval_mode():
    base = ModelConfig(vocab_size=40, embed_dim=6, hidden_size=5, layers=2, bidirectional=True)
    regularised = ModelConfig(**{**vars(base), "embed_dropout": 0.3, "input_dropout": 0.3,
                                 "hidden_dropout": 0.3, "weight_dropout": 0.3})
    plain = SentimentClassifier(base).eval()
    model = SentimentClassifier(regularised)
    model.load_state_dict(plain.state_dict())
    ids = torch.randint(1, 40, (len(LENGTHS), STEPS))
    assert not torch.equal(model.train()(ids, LENGTHS), plain(ids, LENGTHS))
    assert torch.equal(model.eval()(ids, LENGTHS), plain(ids, LENGTHS))


# --- concat pooling -------------------------------------------------------------------------

@pytest.mark.parametrize("bidirectional", [False, True])
def test_concat_pooling_is_last_max_and_mean_side_by_side(bidirectional):
    config = ModelConfig(vocab_size=40, embed_dim=6, hidden_size=5, bidirectional=bidirectional,
                         pooling="concat")
    model = SentimentClassifier(config).eval()
    width = (2 if bidirectional else 1) * 5
    assert model.classifier.in_features == 3 * width
    assert expected_shapes(config)["classifier.weight"] == (2, 3 * width)
    ids = torch.randint(1, 40, (len(LENGTHS), STEPS))
    parts = []
    for pooling in ("last", "max", "mean"):
        model.config.pooling = pooling
        parts.append(model.features(ids, LENGTHS))
    model.config.pooling = "concat"
    assert torch.equal(model.features(ids, LENGTHS), torch.cat(parts, dim=-1))


# --- label smoothing and the optimiser ------------------------------------------------------

def test_label_smoothing_is_off_by_default_and_smooths_when_asked():
    assert training_loss(TrainConfig()) is torch.nn.functional.cross_entropy
    logits, targets = torch.tensor([[4.0, -4.0], [1.0, 2.0]]), torch.tensor([0, 1])
    smoothed = training_loss(TrainConfig(label_smoothing=0.2))(logits, targets)
    log_p = torch.log_softmax(logits, dim=1)
    expected = -(0.9 * log_p[[0, 1], targets] + 0.1 * log_p[[0, 1], 1 - targets]).mean()
    assert torch.allclose(smoothed, expected)


def test_adamw_decays_the_weights_apart_from_the_gradient():
    """A zero gradient: Adam's decay enters the gradient and moves the weight by a whole lr
    step (the adaptive step normalises it); AdamW's shrinks it by lr * weight_decay."""
    moved = {}
    for kind in ("adam", "adamw"):
        layer = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            layer.weight.fill_(1.0)
        optimizer = make_optimizer(layer, TrainConfig(optimizer=kind, lr=0.1, weight_decay=0.01))
        assert type(optimizer).__name__ == {"adam": "Adam", "adamw": "AdamW"}[kind]
        layer.weight.grad = torch.zeros_like(layer.weight)
        optimizer.step()
        moved[kind] = 1.0 - float(layer.weight.detach())
    assert moved["adam"] == pytest.approx(0.1, rel=1e-3)
    assert moved["adamw"] == pytest.approx(0.1 * 0.01, rel=1e-4)


def test_validation_loss_stays_plain_cross_entropy_with_label_smoothing(tiny_file, tmp_path):
    result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output",
                                 str(tmp_path / "run"), "--epochs", "1", "--hidden-size", "8",
                                 "--embed-dim", "8", "--label-smoothing", "0.3", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)["epochs"][0]
    run = load_run(tmp_path / "run")
    splits = load_splits(run.config.data, seed=run.config.train.seed)
    probabilities = Predictor(run).probabilities(splits.validation.texts)
    labels = splits.validation.labels
    plain = -np.log(probabilities[np.arange(len(labels)), labels]).mean()
    assert row["val_loss"] == pytest.approx(plain, rel=1e-4)


# --- truncation -----------------------------------------------------------------------------

WORDS = FILLER[:10]  # ten distinct known words, w0 ... w9


@pytest.mark.parametrize("truncation, max_len, kept", [
    ("head", 4, [0, 1, 2, 3]),
    ("tail", 4, [6, 7, 8, 9]),
    ("both", 4, [0, 1, 8, 9]),
    ("both", 5, [0, 1, 7, 8, 9]),
    ("both", 1, [9]),
    ("tail", 10, list(range(10))),
    ("both", 12, list(range(10))),
])
def test_each_truncation_keeps_its_part_of_a_long_text(truncation, max_len, kept):
    tokenizer = Tokenizer.train([" ".join(WORDS)], vocab_size=50, min_freq=1)
    text = " ".join(WORDS)
    expected = tokenizer.encode([" ".join(WORDS[i] for i in kept)], 100)[0].tolist()
    assert truncate(list(range(10)), max_len, truncation) == kept
    assert truncate(np.arange(10), max_len, truncation).tolist() == kept
    # A few texts go through the library, many through the bulk path: both cut alike.
    assert tokenizer.encode([text], max_len, truncation)[0].tolist() == expected
    bulk = tokenizer.encode([text] * 70, max_len, truncation)
    assert all(ids.tolist() == expected for ids in bulk)


@pytest.mark.parametrize("truncation", ["head", "tail", "both"])
def test_truncation_agrees_between_paths_for_unicode_and_punctuation(truncation):
    texts = ["café,crème,brûlée,déjà,vu,naïve,façade and more words here",
             "!!! great ... awful ??? " * 3, "", "x"]
    tokenizer = Tokenizer.train(texts, vocab_size=100, min_freq=1)
    few = [a.tolist() for a in tokenizer.encode(texts, 5, truncation)]
    many = [a.tolist() for a in tokenizer.encode(texts * 20, 5, truncation)[: len(texts)]]
    assert few == many
    assert all(1 <= len(ids) <= 5 for ids in few)


def test_the_token_cache_keeps_each_truncation_apart(tmp_path):
    texts = [" ".join(WORDS)] * 3
    tokenizer = Tokenizer.train(texts, vocab_size=50, min_freq=1)
    for truncation in ("head", "tail", "both", "head"):
        cached = encode_cached(tokenizer, texts, 4, tmp_path, truncation=truncation)
        assert [a.tolist() for a in cached] == [
            a.tolist() for a in tokenizer.encode(texts, 4, truncation)]


def test_a_run_trained_with_both_predicts_and_explains_with_both(tmp_path):
    """The setting is saved with the run; predict (both engines) and explain read a long text as
    its first and last words, as training did."""
    rows_ = make_reviews(120)
    data = write_jsonl(tmp_path / "reviews.jsonl", rows_)
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", str(data), "--output", str(run_dir),
                                 "--epochs", "2", "--hidden-size", "8", "--embed-dim", "8",
                                 "--max-len", "4", "--truncation", "both", "--json"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["data"]["truncation"] == "both" and saved["data"]["max_len"] == 4
    words = ["the", "movie", "was", "really", "quite", "bland", "and", "this", "story", "it"]
    cut = " ".join(words[:2] + words[-2:])
    for engine in ("numpy", "torch"):
        predictor = Predictor.from_run(run_dir, engine=engine)
        long, short, head = predictor.probabilities([" ".join(words), cut, " ".join(words[:4])])
        assert np.array_equal(long, short) and not np.array_equal(long, head)
    explanation = explain(load_run(run_dir), " ".join(words))
    assert [step.token for step in explanation.tokens] == words[:2] + words[-2:]
    assert explanation.truncated


# --- the whole recipe -----------------------------------------------------------------------

def test_a_recipe_run_records_its_options_and_resumes_bitwise(tiny_file, tmp_path, monkeypatch):
    """Every option on at once: config.json records them, and a run interrupted mid-epoch
    resumes to the same bytes as one that never stopped (the dropout masks come from torch's
    generator, which the resumable state restores)."""
    tiny = ["--hidden-size", "8", "--embed-dim", "8", "--batch-size", "8", "--threads", "1",
            "--seed", "3", "--epochs", "2", "--max-len", "6", *RECIPE, "--json"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output", str(whole),
                                 *tiny])
    assert result.exit_code == 0, result.output
    saved = json.loads((whole / "config.json").read_text())
    assert {key: saved["model"][key] for key in ("embed_dropout", "input_dropout",
                                                 "hidden_dropout", "weight_dropout",
                                                 "pooling")} == {
        "embed_dropout": 0.1, "input_dropout": 0.2, "hidden_dropout": 0.25,
        "weight_dropout": 0.3, "pooling": "concat"}
    assert saved["train"]["optimizer"] == "adamw" and saved["train"]["label_smoothing"] == 0.1
    assert saved["data"]["truncation"] == "both"
    with monkeypatch.context() as patch:
        interrupt_at(patch, epoch=2, step=3, number=signal.SIGINT)
        stopped = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output",
                                      str(parts), *tiny])
    assert stopped.exit_code == 130, stopped.output
    assert_resumes_bitwise(parts, whole)


def test_concat_runs_work_in_explain_and_diagnose(tmp_path):
    data = write_jsonl(tmp_path / "reviews.jsonl", make_reviews(120))
    run_dir = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--dataset", str(data), "--output", str(run_dir),
                                  "--epochs", "1", "--hidden-size", "8", "--embed-dim", "8",
                                  "--bidirectional", "--pooling", "concat", "-q"])
    assert trained.exit_code == 0, trained.output
    text = "the plot was boring but the acting is superb"
    explained = runner.invoke(app, ["explain", "--model", str(run_dir), "--json", text])
    assert explained.exit_code == 0, explained.output
    final = json.loads(explained.output)["probabilities"]
    predicted = Predictor.from_run(run_dir).predict([text])[0].probabilities
    assert final == pytest.approx(predicted, abs=1e-5)
    diagnosed = runner.invoke(app, ["diagnose", "--model", str(run_dir), "--json"])
    assert diagnosed.exit_code == 0, diagnosed.output


def test_the_encoder_applies_weight_dropout_to_every_cell():
    encoder = RecurrentEncoder("lstm", 4, 3, layers=2, bidirectional=True, weight_dropout=0.2,
                               hidden_dropout=0.1)
    assert [r.cell.weight_dropout for r in encoder.recurrences()] == [0.2] * 4
    assert encoder.hidden_dropout.p == 0.1


# --- embedding initialisation ----------------------------------------------------------------

def test_embed_init_starts_the_embedding_uniform_and_leaves_padding_zero():
    torch.manual_seed(0)
    model = SentimentClassifier(ModelConfig(vocab_size=500, embed_dim=16, embed_init=0.1))
    weight = model.embedding.weight.detach()
    assert torch.all(weight[0] == 0)  # [PAD]
    rest = weight[1:]
    assert rest.abs().max() <= 0.1 and rest.abs().max() > 0.09
    assert abs(float(rest.std()) - 0.1 / math.sqrt(3)) < 0.003  # uniform(-a, a): sd a / sqrt(3)


def test_without_embed_init_the_model_is_built_as_before():
    """Off, the embedding is torch's N(0, 1) and nothing else is drawn: the same seed gives the
    same model, parameter for parameter, as a model built without the key existing."""
    torch.manual_seed(0)
    plain = SentimentClassifier(ModelConfig(vocab_size=500, embed_dim=16))
    torch.manual_seed(0)
    reference = nn.Embedding(500, 16, padding_idx=0)
    assert torch.equal(plain.embedding.weight, reference.weight)
    torch.manual_seed(0)
    again = SentimentClassifier(ModelConfig(vocab_size=500, embed_dim=16, embed_init=None))
    for (name, a), (_, b) in zip(plain.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("value", [0.0, -0.1, 11.0, math.nan, math.inf])
def test_embed_init_must_be_a_positive_range(value):
    with pytest.raises(ConfigError, match=r"^embed_init must be in \(0, 10\]"):
        ModelConfig(embed_init=value).validate()


def test_embed_init_is_a_flag_recorded_in_the_run(tiny_file, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output", str(run),
                                 "--epochs", "1", "--embed-init", "0.05", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["model"]["embed_init"] == 0.05
    bad = runner.invoke(app, ["train", "--dataset", str(tiny_file), "--output",
                              str(tmp_path / "bad"), "--embed-init", "0"])
    assert_clean_error(bad, "embed_init must be in (0, 10]")
    assert not (tmp_path / "bad").exists()
