# mypy: disable-error-code="misc,index,arg-type,assignment,attr-defined,union-attr,operator,call-arg,no-any-return"
"""A corpus of real architectures (torchvision, timm, transformers, PyTorch examples) with known verdicts.

Healthy cases are the libraries' own models at their own default initialisation, in
tiny configurations that a 2-core CPU runs in seconds: a correct diagnosis finds
nothing to warn about. Sick cases are derived from those models by one documented
change (every ReLU a Sigmoid, BatchNorm removed, convolution weights scaled, a NaN in
the batch, a learning rate that diverges), or are a library's model sick at its own
init (transformers' EfficientNet); each carries a ``verify`` function that
measures the sickness with plain PyTorch autograd, independently of gradvet.

``python -m gradvet.corpus [--markdown] [--only SUBSTR] [--full-size]`` prints gradvet's
verdict on every case. The libraries are imported inside the builders, so importing
this module needs none of them; a case whose library is missing is reported as skipped.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

Batch = tuple[Any, Any]
Built = tuple[nn.Module, Batch, Callable[[Any, Any], torch.Tensor]]


@dataclass(frozen=True)
class Case:
    """One real architecture with a known diagnosis.

    Attributes:
        id: ``"library/model[-variant]"``, unique.
        library: ``"torchvision"``, ``"timm"``, ``"transformers"`` or ``"torch"``.
        family: ``"cnn"``, ``"vit"``, ``"encoder"``, ``"decoder"``, ``"encoder-decoder"``, ``"rnn"``, ...
        build: ``seed -> (model, batch, loss_fn)``.
        expect: finding kinds a correct verdict contains at warning/error (empty: healthy).
        layers: module names; the expected finding must name at least one of them.
        optimizer: for sickness that shows only in training: builds the optimizer of a
            ``gradvet.Monitor`` loop of ``steps`` steps on the batch (else ``gradvet.check``).
        steps: training steps with ``optimizer``.
        verify: ``seed -> numbers`` measuring the sickness with plain PyTorch (sick cases).
        note: what the variant changes, in words.
    """

    id: str
    library: str
    family: str
    build: Callable[[int], Built]
    expect: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    optimizer: Optional[Callable[[nn.Module], torch.optim.Optimizer]] = None
    steps: int = 20
    verify: Optional[Callable[[int], dict[str, float]]] = None
    note: str = ""

    @property
    def healthy(self) -> bool:
        return not self.expect

    @property
    def available(self) -> bool:
        """Whether the case's library is installed."""
        return self.library == "torch" or importlib.util.find_spec(self.library) is not None


# -- batches and losses -------------------------------------------------------------------
def images(seed: int, n: int = 2, size: int = 64, classes: int = 10, channels: int = 3) -> Batch:
    """``n`` random standard-normal images and random class targets."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def tokens(seed: int, vocab: int, n: int = 2, T: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, T), generator=g)


def logits_ce(out: Any, targets: torch.Tensor) -> torch.Tensor:
    """Cross entropy of the logits (a tensor, or ``out.logits`` of a HF output) against the targets."""
    logits = out.logits if hasattr(out, "logits") else out
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def lm_batch(seed: int, vocab: int, n: int = 2, T: int = 16, key: Optional[str] = "input_ids") -> Batch:
    """Random tokens and their next-token labels (the last position predicts the first)."""
    ids = tokens(seed, vocab, n, T)
    return ({key: ids} if key else ids), torch.roll(ids, -1, dims=1)


def _seeded(fn: Callable[[], nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return fn()


def call(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


# -- transformers ---------------------------------------------------------------------------
V, T_LEN = 256, 16  # vocabulary and sequence length of every language model
_MOBILEBERT = dict(vocab_size=V, hidden_size=64, embedding_size=32, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, intra_bottleneck_size=32, true_hidden_size=32)


def _hf(cls_name: str, config_name: str, **cfg: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import transformers

        config = getattr(transformers, config_name)(**cfg)
        return getattr(transformers, cls_name)(config)
    return make


def _hf_lm(cls_name: str, config_name: str, **cfg: Any) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        return _seeded(_hf(cls_name, config_name, **cfg), seed), lm_batch(seed, V), logits_ce
    return build


def _hf_seq2seq(cls_name: str, config_name: str, **cfg: Any) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        model = _seeded(_hf(cls_name, config_name, **cfg), seed)
        src, tgt = tokens(seed, V, T=T_LEN), tokens(seed + 1, V, T=T_LEN)
        inputs = {"input_ids": src, "decoder_input_ids": tgt}
        return model, (inputs, torch.roll(tgt, -1, dims=1)), logits_ce
    return build


_DEC = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64)
_ENC = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64)


def _gpt2_cfg(**over: Any) -> dict[str, Any]:
    return dict(dict(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=V - 1,
                     eos_token_id=V - 1), **over)


def _whisper(seed: int) -> Built:
    model = _seeded(_hf("WhisperForConditionalGeneration", "WhisperConfig", vocab_size=V, d_model=64,
                        encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                        encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=16,
                        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=1), seed)
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 16, 32, generator=g)
    tgt = tokens(seed + 1, V, T=T_LEN)
    return model, ({"input_features": feats, "decoder_input_ids": tgt}, torch.roll(tgt, -1, dims=1)), logits_ce


def _hf_vit(seed: int) -> Built:
    model = _seeded(_hf("ViTForImageClassification", "ViTConfig", image_size=32, patch_size=8, num_channels=3,
                        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        num_labels=10), seed)
    x, y = images(seed, size=32)
    return model, ({"pixel_values": x}, y), logits_ce


def _wav2vec2(seed: int) -> Built:
    model = _seeded(_hf("Wav2Vec2ForSequenceClassification", "Wav2Vec2Config", hidden_size=64,
                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
                        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_labels=10,
                        mask_time_prob=0.0, layerdrop=0.0), seed)
    g = torch.Generator().manual_seed(seed)
    return model, ({"input_values": torch.randn(2, 800, generator=g)}, torch.randint(0, 10, (2,), generator=g)), \
        logits_ce


def _transformers_healthy() -> list[Case]:
    dec, enc, s2s = "decoder", "encoder", "encoder-decoder"
    rows: list[tuple[str, str, Callable[[int], Built]]] = [
        ("gpt2", dec, _hf_lm("GPT2LMHeadModel", "GPT2Config", **_gpt2_cfg())),
        ("bert", enc, _hf_lm("BertForMaskedLM", "BertConfig", **_ENC)),
        ("roberta", enc, _hf_lm("RobertaForMaskedLM", "RobertaConfig", **dict(_ENC, max_position_embeddings=66))),
        ("distilbert", enc, _hf_lm("DistilBertForMaskedLM", "DistilBertConfig", vocab_size=V, dim=64, n_layers=2,
                                   n_heads=4, hidden_dim=128, max_position_embeddings=64)),
        ("albert", enc, _hf_lm("AlbertForMaskedLM", "AlbertConfig", **dict(_ENC, embedding_size=32))),
        ("electra", enc, _hf_lm("ElectraForMaskedLM", "ElectraConfig", **dict(_ENC, embedding_size=32))),
        ("t5", s2s, _hf_seq2seq("T5ForConditionalGeneration", "T5Config", vocab_size=V, d_model=64, d_ff=128, d_kv=16,
                                num_layers=2, num_heads=4, decoder_start_token_id=0)),
        ("bart", s2s, _hf_seq2seq("BartForConditionalGeneration", "BartConfig", vocab_size=V, d_model=64,
                                  encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                  decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                  max_position_embeddings=64)),
        ("llama", dec, _hf_lm("LlamaForCausalLM", "LlamaConfig", **dict(_DEC, num_key_value_heads=2))),
        ("mistral", dec, _hf_lm("MistralForCausalLM", "MistralConfig", **dict(_DEC, num_key_value_heads=2))),
        ("qwen2", dec, _hf_lm("Qwen2ForCausalLM", "Qwen2Config", **dict(_DEC, num_key_value_heads=2))),
        ("phi", dec, _hf_lm("PhiForCausalLM", "PhiConfig", **_DEC)),
        ("opt", dec, _hf_lm("OPTForCausalLM", "OPTConfig", vocab_size=V, hidden_size=64, ffn_dim=128,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                            word_embed_proj_dim=64)),
        ("gpt_neo", dec, _hf_lm("GPTNeoForCausalLM", "GPTNeoConfig", vocab_size=V, hidden_size=64, num_layers=2,
                                num_heads=4, attention_types=[[["global", "local"], 1]], max_position_embeddings=64,
                                window_size=8)),
        ("bloom", dec, _hf_lm("BloomForCausalLM", "BloomConfig", vocab_size=V, hidden_size=64, n_layer=2, n_head=4)),
        ("vit", "vit", _hf_vit),
        ("whisper", s2s, _whisper),
        ("wav2vec2", enc, _wav2vec2),
    ]
    return [Case(f"transformers/{name}", "transformers", fam, b) for name, fam, b in rows]


# -- torchvision ----------------------------------------------------------------------------
def _tv(name: str, size: int = 64, n: int = 2, **kw: Any) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        import torchvision

        model = _seeded(lambda: getattr(torchvision.models, name)(weights=None, num_classes=10, **kw), seed)
        return model, images(seed, n=n, size=size), F.cross_entropy
    return build


def _tv_vit(seed: int) -> Built:
    from torchvision.models import VisionTransformer

    model = _seeded(lambda: VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                              mlp_dim=64, num_classes=10), seed)
    return model, images(seed, size=32), F.cross_entropy


def _torchvision_healthy() -> list[Case]:
    rows: list[tuple[str, str, Callable[[int], Built]]] = [
        ("resnet18", "cnn", _tv("resnet18")),
        ("resnet50", "cnn", _tv("resnet50")),
        ("resnext50_32x4d", "cnn", _tv("resnext50_32x4d")),
        ("vgg11", "cnn", _tv("vgg11", size=32)),
        ("vgg11_bn", "cnn", _tv("vgg11_bn", size=32)),
        ("densenet121", "cnn", _tv("densenet121")),
        ("mobilenet_v2", "cnn", _tv("mobilenet_v2")),
        ("mobilenet_v3_small", "cnn", _tv("mobilenet_v3_small")),
        ("mobilenet_v3_large", "cnn", _tv("mobilenet_v3_large")),
        ("efficientnet_b0", "cnn", _tv("efficientnet_b0")),
        ("convnext_tiny", "cnn", _tv("convnext_tiny")),
        ("regnet_x_400mf", "cnn", _tv("regnet_x_400mf")),
        ("regnet_y_400mf", "cnn", _tv("regnet_y_400mf")),
        ("shufflenet_v2_x0_5", "cnn", _tv("shufflenet_v2_x0_5")),
        ("mnasnet0_5", "cnn", _tv("mnasnet0_5")),
        ("squeezenet1_1", "cnn", _tv("squeezenet1_1")),
        ("googlenet", "cnn", _tv("googlenet", aux_logits=False, init_weights=True)),
        ("vit_tiny", "vit", _tv_vit),
        ("swin_t", "vit", _tv("swin_t")),
    ]
    return [Case(f"torchvision/{name}", "torchvision", fam, b) for name, fam, b in rows]


# -- timm -----------------------------------------------------------------------------------
def _timm(name: str, size: int = 64, n: int = 2, **kw: Any) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        import timm

        model = _seeded(lambda: timm.create_model(name, pretrained=False, num_classes=10, **kw), seed)
        return model, images(seed, n=n, size=size), F.cross_entropy
    return build


def _timm_healthy() -> list[Case]:
    rows: list[tuple[str, str, Callable[[int], Built]]] = [
        ("convnext_atto", "cnn", _timm("convnext_atto")),
        ("efficientnet_b0", "cnn", _timm("efficientnet_b0")),
        ("mobilenetv3_small_100", "cnn", _timm("mobilenetv3_small_100")),
        ("regnety_002", "cnn", _timm("regnety_002")),
        ("vit_tiny_patch16_224", "vit", _timm("vit_tiny_patch16_224", size=32, img_size=32, depth=4)),
        ("deit3_small_patch16_224", "vit", _timm("deit3_small_patch16_224", size=32, img_size=32, depth=4)),
        ("cait_xxs24_224", "vit", _timm("cait_xxs24_224", size=32, img_size=32, depth=4)),
        ("poolformer_s12", "cnn", _timm("poolformer_s12")),
        ("nf_resnet26", "cnn", _timm("nf_resnet26")),
        ("swin_tiny_patch4_window7_224", "vit", _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=4)),
        ("resnet18_zero_init_last", "cnn", _timm("resnet18", zero_init_last=True)),
        ("ghostnet_050", "cnn", _timm("ghostnet_050")),
        ("rexnet_100", "cnn", _timm("rexnet_100")),
        ("dla34", "cnn", _timm("dla34")),
    ]
    return [Case(f"timm/{name}", "timm", fam, b) for name, fam, b in rows]


# -- held out: architectures first run after the trunk rule was built --------------------------
def _held_out_healthy() -> list[Case]:
    """55 architectures swept on 2026-12-05, none of them seen while the rules were written (docs/corpus.md,
    "Held-out sweep"; NFNet-L0 also at batch 16): 54 were right at once; NFNet's dead-unit false alarm was
    then fixed. torchvision's AlexNet is not here: its vanishing warning stands (PyTorch's default init
    over 8 plain layers)."""
    dec, enc, s2s = "decoder", "encoder", "encoder-decoder"
    hf: list[tuple[str, str, Callable[[int], Built]]] = [
        ("gpt_neox", dec, _hf_lm("GPTNeoXForCausalLM", "GPTNeoXConfig", **_DEC)),
        ("falcon", dec, _hf_lm("FalconForCausalLM", "FalconConfig", vocab_size=V, hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=4)),
        ("gemma", dec, _hf_lm("GemmaForCausalLM", "GemmaConfig", **dict(_DEC, num_key_value_heads=2, head_dim=16))),
        ("gptj", dec, _hf_lm("GPTJForCausalLM", "GPTJConfig", vocab_size=V, n_embd=64, n_layer=2, n_head=4,
                             n_positions=64, rotary_dim=8)),
        ("codegen", dec, _hf_lm("CodeGenForCausalLM", "CodeGenConfig", vocab_size=V, n_embd=64, n_layer=2, n_head=4,
                                n_positions=64, rotary_dim=8)),
        ("biogpt", dec, _hf_lm("BioGptForCausalLM", "BioGptConfig", **_ENC)),
        ("xglm", dec, _hf_lm("XGLMForCausalLM", "XGLMConfig", vocab_size=V, d_model=64, ffn_dim=128, num_layers=2,
                             attention_heads=4, max_position_embeddings=64)),
        ("deberta_v2", enc, _hf_lm("DebertaV2ForMaskedLM", "DebertaV2Config", **_ENC)),
        ("mobilebert", enc, _hf_lm("MobileBertForMaskedLM", "MobileBertConfig", **_MOBILEBERT)),
        ("squeezebert", enc, _hf_lm("SqueezeBertForMaskedLM", "SqueezeBertConfig", **dict(_ENC, embedding_size=64))),
        ("convbert", enc, _hf_lm("ConvBertForMaskedLM", "ConvBertConfig", **dict(_ENC, embedding_size=64))),
        ("funnel", enc, _hf_lm("FunnelForMaskedLM", "FunnelConfig", vocab_size=V, d_model=64, n_head=4, d_head=16,
                               d_inner=128, block_sizes=[1, 1])),
        ("xlnet", dec, _hf_lm("XLNetLMHeadModel", "XLNetConfig", vocab_size=V, d_model=64, n_layer=2, n_head=4,
                              d_inner=128)),
        ("megatron_bert", enc, _hf_lm("MegatronBertForMaskedLM", "MegatronBertConfig", **_ENC)),
        ("mt5", s2s, _hf_seq2seq("MT5ForConditionalGeneration", "MT5Config", vocab_size=V, d_model=64, d_ff=128,
                                 d_kv=16, num_layers=2, num_heads=4, decoder_start_token_id=0)),
        ("pegasus", s2s, _hf_seq2seq("PegasusForConditionalGeneration", "PegasusConfig", vocab_size=V, d_model=64,
                                     encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                     decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                     max_position_embeddings=64)),
        ("marian", s2s, _hf_seq2seq("MarianMTModel", "MarianConfig", vocab_size=V, d_model=64, encoder_layers=2,
                                    decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                                    encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
                                    pad_token_id=0, decoder_start_token_id=0)),
        ("mamba", "ssm", _hf_lm("MambaForCausalLM", "MambaConfig", vocab_size=V, hidden_size=64, state_size=8,
                                num_hidden_layers=2)),
        ("rwkv", "rnn", _hf_lm("RwkvForCausalLM", "RwkvConfig", vocab_size=V, hidden_size=64, num_hidden_layers=2,
                               context_length=64)),
    ]
    tv: list[tuple[str, str, Callable[[int], Built]]] = [
        ("resnet34", "cnn", _tv("resnet34")), ("wide_resnet50_2", "cnn", _tv("wide_resnet50_2")),
        ("vgg16_bn", "cnn", _tv("vgg16_bn", size=32)), ("densenet161", "cnn", _tv("densenet161")),
        ("efficientnet_v2_s", "cnn", _tv("efficientnet_v2_s")), ("regnet_y_800mf", "cnn", _tv("regnet_y_800mf")),
        ("mnasnet1_0", "cnn", _tv("mnasnet1_0")), ("shufflenet_v2_x1_0", "cnn", _tv("shufflenet_v2_x1_0")),
        ("convnext_small", "cnn", _tv("convnext_small")), ("swin_v2_t", "vit", _tv("swin_v2_t")),
        ("maxvit_t", "vit", _tv("maxvit_t", size=224, n=1)),
        ("inception_v3", "cnn", _tv("inception_v3", size=75, aux_logits=False, init_weights=True)),
        ("resnext101_32x8d", "cnn", _tv("resnext101_32x8d", size=32)),
    ]
    tm: list[tuple[str, str, Callable[[int], Built]]] = [
        ("resnet50d", "cnn", _timm("resnet50d")), ("seresnext26d_32x4d", "cnn", _timm("seresnext26d_32x4d")),
        ("efficientnetv2_rw_t", "cnn", _timm("efficientnetv2_rw_t")),
        ("mixer_s16_224", "mlp", _timm("mixer_s16_224", size=32, img_size=32)),
        ("resmlp_12_224", "mlp", _timm("resmlp_12_224", size=32, img_size=32)),
        ("convmixer_768_32", "cnn", _timm("convmixer_768_32", size=32)),
        ("levit_128s", "vit", _timm("levit_128s", size=224)), ("pvt_v2_b0", "vit", _timm("pvt_v2_b0")),
        ("coat_lite_tiny", "vit", _timm("coat_lite_tiny", size=64, img_size=64)),
        ("xcit_nano_12_p16_224", "vit", _timm("xcit_nano_12_p16_224", size=32, img_size=32)),
        ("beit_base_patch16_224", "vit", _timm("beit_base_patch16_224", size=32, img_size=32, depth=4)),
        ("eva02_tiny_patch14_224", "vit", _timm("eva02_tiny_patch14_224", size=28, img_size=28)),
        ("repvgg_a0", "cnn", _timm("repvgg_a0")), ("hrnet_w18_small", "cnn", _timm("hrnet_w18_small")),
        ("dpn68", "cnn", _timm("dpn68")), ("mobilevit_xxs", "vit", _timm("mobilevit_xxs", size=64)),
        ("efficientformer_l1", "vit", _timm("efficientformer_l1", size=224)), ("nfnet_l0", "cnn", _timm("nfnet_l0")),
        ("nfnet_l0_batch16", "cnn", _timm("nfnet_l0", size=32, n=16)), ("gernet_s", "cnn", _timm("gernet_s")),
        ("lambda_resnet26t", "cnn", _timm("lambda_resnet26t", size=64)), ("tresnet_m", "cnn", _timm("tresnet_m")),
        ("inception_v4", "cnn", _timm("inception_v4", size=75)),
        ("vit_small_layerscale", "vit", _timm("vit_small_patch16_224", size=32, img_size=32, depth=4,
                                              init_values=1e-5)),
    ]
    return ([Case(f"transformers/{n}", "transformers", f, b) for n, f, b in hf]
            + [Case(f"torchvision/{n}", "torchvision", f, b) for n, f, b in tv]
            + [Case(f"timm/{n}", "timm", f, b) for n, f, b in tm])


# -- second held-out sweep --------------------------------------------------------------------
def _hf_image(cls: str, cfg: str, size: int = 32, **kw: Any) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        model = _seeded(_hf(cls, cfg, num_labels=10, **kw), seed)
        x, y = images(seed, size=size)
        return model, ({"pixel_values": x}, y), logits_ce
    return build


def _hf_audio(cls: str, cfg: str, **kw: Any) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        model = _seeded(_hf(cls, cfg, num_labels=10, **kw), seed)
        g = torch.Generator().manual_seed(seed)
        return model, ({"input_values": torch.randn(2, 800, generator=g)},
                       torch.randint(0, 10, (2,), generator=g)), logits_ce
    return build


_AUDIO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
              conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
              num_conv_pos_embedding_groups=4, mask_time_prob=0.0, layerdrop=0.0)


def _video(name: str, frames: int = 4, size: int = 32) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        import torchvision

        model = _seeded(lambda: getattr(torchvision.models.video, name)(weights=None, num_classes=10), seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 3, frames, size, size, generator=g)
        return model, (x, torch.randint(0, 10, (2,), generator=g)), F.cross_entropy
    return build


def _segmentation(name: str, size: int = 64) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        import torchvision

        model = _seeded(lambda: getattr(torchvision.models.segmentation, name)(
            weights=None, weights_backbone=None, num_classes=5, aux_loss=False), seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 3, size, size, generator=g)
        y = torch.randint(0, 5, (2, size, size), generator=g)
        return model, (x, y), lambda out, t: F.cross_entropy(out["out"], t)
    return build


def _detection(name: str, size: int = 320) -> Callable[[int], Built]:
    """A torchvision detector in training mode: ``model(images=..., targets=...)`` returns a dict of losses, and
    the loss is their sum, as its training reference scripts take it."""
    def build(seed: int) -> Built:
        import torchvision

        model = _seeded(lambda: getattr(torchvision.models.detection, name)(
            weights=None, weights_backbone=None, num_classes=5), seed)
        g = torch.Generator().manual_seed(seed)
        imgs = [torch.rand(3, size, size, generator=g) for _ in range(2)]
        targets = []
        for _ in imgs:
            boxes = torch.rand(3, 4, generator=g) * (size / 2)
            boxes[:, 2:] += boxes[:, :2] + size / 16  # x2 > x1, y2 > y1
            targets.append({"boxes": boxes, "labels": torch.randint(1, 5, (3,), generator=g)})
        return model, ({"images": imgs, "targets": targets}, None), lambda out, _: sum(out.values())
    return build


def _held_out_3_healthy() -> list[Case]:
    """Detectors (2026-12-06, second session): inputs with targets, a dict of losses summed; their backbones'
    BatchNorms are frozen (``FrozenBatchNorm2d``). ``check`` at init: no finding on either, nor on
    RetinaNet, Mask R-CNN and FCOS with ResNet-50 backbones (35-40 s each, left out for the suite's time)."""
    return [Case(f"torchvision/{k}", "torchvision", "detection", _detection(k))
            for k in ("fasterrcnn_mobilenet_v3_large_320_fpn", "ssdlite320_mobilenet_v3_large")]


def _held_out_2_healthy() -> list[Case]:
    """104 architectures swept on 2026-12-06 (docs/corpus.md, "Second held-out sweep"), none of them seen
    while the rules were written: MoE and hybrid decoders, encoders with Fourier/Nystrom/sparse attention,
    audio, video and segmentation networks, deep residual nets (ResNet-152, a 12-block ViT), and 59 timm
    families; no finding at warning or error on any. transformers' EfficientNet, swept with them, is not
    here: it is not healthy (its BatchNorm gains are drawn from N(0, 0.02): activations reach 1e-33 at
    ``top_conv``, and AdamW barely trains it); it is a sick case (``transformers/efficientnet``), which
    ``check`` at its init first missed."""
    hf = {
        "mixtral": _hf_lm("MixtralForCausalLM", "MixtralConfig", **dict(_DEC, num_key_value_heads=2,
                                                                         num_local_experts=4, num_experts_per_tok=2)),
        "qwen2_moe": _hf_lm("Qwen2MoeForCausalLM", "Qwen2MoeConfig", **dict(
            _DEC, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
            shared_expert_intermediate_size=64)),
        "starcoder2": _hf_lm("Starcoder2ForCausalLM", "Starcoder2Config", **dict(_DEC, num_key_value_heads=2)),
        "stablelm": _hf_lm("StableLmForCausalLM", "StableLmConfig", **dict(_DEC, num_key_value_heads=2)),
        "olmo": _hf_lm("OlmoForCausalLM", "OlmoConfig", **_DEC),
        "phi3": _hf_lm("Phi3ForCausalLM", "Phi3Config", **dict(_DEC, pad_token_id=0)),
        "cohere": _hf_lm("CohereForCausalLM", "CohereConfig", **_DEC),
        "gpt_bigcode": _hf_lm("GPTBigCodeForCausalLM", "GPTBigCodeConfig", **_gpt2_cfg()),
        "persimmon": _hf_lm("PersimmonForCausalLM", "PersimmonConfig", **_DEC),
        "jamba": _hf_lm("JambaForCausalLM", "JambaConfig", vocab_size=V, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, attn_layer_period=2,
                        attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1, num_experts=2,
                        mamba_d_state=8, mamba_expand=2, use_mamba_kernels=False),
        "mpnet": _hf_lm("MPNetForMaskedLM", "MPNetConfig", **dict(_ENC, max_position_embeddings=66)),
        "esm": _hf_lm("EsmForMaskedLM", "EsmConfig", **dict(_ENC, pad_token_id=1, mask_token_id=2,
                                                            max_position_embeddings=66)),
        "fnet": _hf_lm("FNetForMaskedLM", "FNetConfig", vocab_size=V, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, max_position_embeddings=64),
        "nystromformer": _hf_lm("NystromformerForMaskedLM", "NystromformerConfig", **dict(
            _ENC, num_landmarks=4, segment_means_seq_len=16, max_position_embeddings=66)),
        "big_bird": _hf_lm("BigBirdForMaskedLM", "BigBirdConfig", **dict(_ENC, attention_type="original_full")),
        "ernie": _hf_lm("ErnieForMaskedLM", "ErnieConfig", **_ENC),
        "xlm_roberta": _hf_lm("XLMRobertaForMaskedLM", "XLMRobertaConfig", **dict(_ENC, max_position_embeddings=66)),
        "roformer": _hf_lm("RoFormerForMaskedLM", "RoFormerConfig", **_ENC),
        "blenderbot": _hf_seq2seq("BlenderbotForConditionalGeneration", "BlenderbotConfig", vocab_size=V, d_model=64,
                                  encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                  decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                  max_position_embeddings=64),
        "m2m100": _hf_seq2seq("M2M100ForConditionalGeneration", "M2M100Config", vocab_size=V, d_model=64,
                              encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                              encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64),
        "switch_transformers": _hf_seq2seq("SwitchTransformersForConditionalGeneration", "SwitchTransformersConfig",
                                           vocab_size=V, d_model=64, d_ff=128, d_kv=16, num_layers=2,
                                           num_decoder_layers=2, num_heads=4, num_experts=4, decoder_start_token_id=0),
        "swin": _hf_image("SwinForImageClassification", "SwinConfig", image_size=32, patch_size=2, embed_dim=16,
                          depths=[1, 1], num_heads=[2, 2], window_size=4),
        "convnextv2": _hf_image("ConvNextV2ForImageClassification", "ConvNextV2Config", hidden_sizes=[16, 32, 64, 128],
                                depths=[1, 1, 2, 1]),
        "dinov2": _hf_image("Dinov2ForImageClassification", "Dinov2Config", image_size=32, patch_size=8,
                            hidden_size=64, num_hidden_layers=4, num_attention_heads=4),
        "segformer": _hf_image("SegformerForImageClassification", "SegformerConfig", hidden_sizes=[16, 32, 64, 128],
                               depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 2, 4], decoder_hidden_size=64),
        "resnet_hf": _hf_image("ResNetForImageClassification", "ResNetConfig", size=64, embedding_size=16,
                               hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="bottleneck"),
        # growth 10^11.8 and gradient norm 1.5e13 at init, from its last stage's 1x1 maps: BatchNorm over the
        # 2 images; with 8 it reads 10^1.3 (gradvet.diagnosis._trunk, tests/diagnosis/test_levit_growth.py)
        "levit_hf": _hf_image("LevitForImageClassification", "LevitConfig", size=64, image_size=64),
        "cvt": _hf_image("CvtForImageClassification", "CvtConfig", size=64),
        "beit_hf": _hf_image("BeitForImageClassification", "BeitConfig", image_size=32, patch_size=8, hidden_size=64,
                             num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                             use_mean_pooling=True, layer_scale_init_value=0.1),
        "hubert": _hf_audio("HubertForSequenceClassification", "HubertConfig", **_AUDIO),
        "data2vec_audio": _hf_audio("Data2VecAudioForSequenceClassification", "Data2VecAudioConfig", **_AUDIO),
    }
    tv = {
        "resnet152": _tv("resnet152"),
        "vgg19_bn": _tv("vgg19_bn", size=32),
        "densenet201": _tv("densenet201"),
        "regnet_y_1_6gf": _tv("regnet_y_1_6gf"),
        "efficientnet_b3": _tv("efficientnet_b3"),
        "shufflenet_v2_x2_0": _tv("shufflenet_v2_x2_0"),
        "r3d_18": _video("r3d_18"),
        "mc3_18": _video("mc3_18"),
        "r2plus1d_18": _video("r2plus1d_18"),
        "s3d": _video("s3d", frames=16, size=224),
        "swin3d_t": _video("swin3d_t", frames=4, size=64),
        "fcn_resnet50": _segmentation("fcn_resnet50"),
        "deeplabv3_mobilenet_v3_large": _segmentation("deeplabv3_mobilenet_v3_large"),
        "lraspp_mobilenet_v3_large": _segmentation("lraspp_mobilenet_v3_large"),
    }
    small = {"img_size": 32}
    tm = {name: _timm(name) for name in (
        "cspresnet50", "cspdarknet53", "res2net50_14w_8s", "resnest14d", "skresnet18", "selecsls42b",
        "ese_vovnet19b_dw", "hardcorenas_a", "fbnetc_100", "efficientvit_b0", "fastvit_t8", "edgenext_xx_small",
        "mobileone_s0", "lcnet_050", "tinynet_a", "ghostnetv2_100", "xception41",
        "densenet121", "resnetv2_50", "resnetv2_50x1_bit", "regnetz_b16", "mixnet_s", "semnasnet_050",
        "cs3darknet_s", "darknet53", "ecaresnet26t", "dm_nfnet_f0", "hgnetv2_b0",
        "starnet_s1", "mambaout_femto", "rdnet_tiny", "repghostnet_050", "inception_next_tiny", "focalnet_tiny_srf", "davit_tiny", "convformer_s18",
    )}
    tm.update({
        "gcvit_xxtiny": _timm("gcvit_xxtiny", img_size=64),
        "tiny_vit_5m_224": _timm("tiny_vit_5m_224", size=224),
        "inception_resnet_v2": _timm("inception_resnet_v2", size=128),
        "eca_botnext26ts_256": _timm("eca_botnext26ts_256", img_size=64),
        "botnet26t_256": _timm("botnet26t_256", img_size=64),
        "efficientformerv2_s0": _timm("efficientformerv2_s0", img_size=64),
        "coatnet_nano_rw_224": _timm("coatnet_nano_rw_224", img_size=64),
        "maxvit_nano_rw_256": _timm("maxvit_nano_rw_256", img_size=64),
        "nest_tiny": _timm("nest_tiny", img_size=64),
        "twins_svt_small": _timm("twins_svt_small"),
        "crossvit_tiny_240": _timm("crossvit_tiny_240", size=240),
        "pit_ti_224": _timm("pit_ti_224", size=64, img_size=64),
        "tnt_s_patch16_224": _timm("tnt_s_patch16_224", size=32, depth=4, **small),
        "visformer_tiny": _timm("visformer_tiny", img_size=64),
        "volo_d1_224": _timm("volo_d1_224", img_size=64),
        "sequencer2d_s": _timm("sequencer2d_s", img_size=64),
        "gmlp_ti16_224": _timm("gmlp_ti16_224", size=32, **small),
        "convit_tiny": _timm("convit_tiny", size=32, **small),
        "hiera_tiny_224": _timm("hiera_tiny_224", img_size=64),
        "vit_relpos_small_patch16_224": _timm("vit_relpos_small_patch16_224", size=32, depth=4, **small),
        "mvitv2_tiny": _timm("mvitv2_tiny", img_size=64),
        "efficientvit_m0": _timm("efficientvit_m0", img_size=64),
        "vit_small_patch16_224_deep": _timm("vit_small_patch16_224", size=32, depth=12, **small),
    })
    fam = {"r3d_18": "video", "mc3_18": "video", "r2plus1d_18": "video", "s3d": "video", "swin3d_t": "video",
           "fcn_resnet50": "segmentation", "deeplabv3_mobilenet_v3_large": "segmentation",
           "lraspp_mobilenet_v3_large": "segmentation", "hubert": "audio", "data2vec_audio": "audio"}
    out = [Case(f"transformers/{k}", "transformers", fam.get(k, _HF_FAMILY.get(k, "decoder")), v) for k, v in hf.items()]
    out += [Case(f"torchvision/{k}", "torchvision", fam.get(k, "cnn"), v) for k, v in tv.items()]
    vits = {"gcvit_xxtiny", "tiny_vit_5m_224", "coatnet_nano_rw_224", "maxvit_nano_rw_256", "nest_tiny",
            "twins_svt_small", "crossvit_tiny_240", "pit_ti_224", "tnt_s_patch16_224", "volo_d1_224", "convit_tiny",
            "hiera_tiny_224", "vit_relpos_small_patch16_224", "mvitv2_tiny", "efficientvit_m0", "davit_tiny",
            "vit_small_patch16_224_deep", "efficientformerv2_s0"}
    mlps = {"gmlp_ti16_224", "sequencer2d_s"}
    out += [Case(f"timm/{k}", "timm", "vit" if k in vits else "mlp" if k in mlps else "cnn", v) for k, v in tm.items()]
    return out


_HF_FAMILY = {**dict.fromkeys(("mpnet", "esm", "fnet", "nystromformer", "big_bird", "ernie", "xlm_roberta",
                                "roformer"), "encoder"),
              **dict.fromkeys(("blenderbot", "m2m100", "switch_transformers"), "encoder-decoder"),
              **dict.fromkeys(("swin", "dinov2", "beit_hf"), "vit"),
              **dict.fromkeys(("convnextv2", "segformer", "resnet_hf", "levit_hf", "cvt"), "cnn")}


# -- torch.nn / pytorch examples ------------------------------------------------------------
class RNNModel(nn.Module):
    """pytorch/examples ``word_language_model``: embedding, LSTM/GRU/RNN_TANH, linear decoder."""

    def __init__(self, rnn_type: str = "LSTM", ntoken: int = V, ninp: int = 64, nhid: int = 64, nlayers: int = 2,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ("LSTM", "GRU"):
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout, batch_first=True)
        else:
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity="tanh", dropout=dropout, batch_first=True)
        self.decoder = nn.Linear(nhid, ntoken)
        initrange = 0.1  # the example's init_weights
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.drop(self.encoder(x)))
        return self.decoder(self.drop(out))


class TransformerLM(nn.Module):
    """pytorch/examples ``word_language_model`` TransformerModel: embedding, sinusoidal positions, causal encoder."""

    def __init__(self, ntoken: int = V, d: int = 64, nhead: int = 4, nhid: int = 128, nlayers: int = 2,
                 norm_first: bool = False) -> None:
        super().__init__()
        self.d = d
        self.encoder = nn.Embedding(ntoken, d)
        pos = torch.arange(64).unsqueeze(1) * torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
        pe = torch.zeros(64, d)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos), torch.cos(pos)
        self.register_buffer("pe", pe)
        layer = nn.TransformerEncoderLayer(d, nhead, nhid, dropout=0.1, batch_first=True, norm_first=norm_first)
        self.transformer_encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
        self.decoder = nn.Linear(d, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T)
        h = self.encoder(x) * math.sqrt(self.d) + self.pe[:T]
        return self.decoder(self.transformer_encoder(h, mask=mask, is_causal=True))


class DCGANDiscriminator(nn.Module):
    """pytorch/examples ``dcgan`` Discriminator (ndf=16) on 64x64 images, with its ``weights_init``."""

    def __init__(self, ndf: int = 16, nc: int = 3) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)


def _rnn_lm(rnn_type: str, **kw: Any) -> Callable[[int], Built]:
    return lambda seed: (_seeded(lambda: RNNModel(rnn_type, **kw), seed), lm_batch(seed, V, T=32, key=None), logits_ce)


def _tf_lm(norm_first: bool) -> Callable[[int], Built]:
    return lambda seed: (_seeded(lambda: TransformerLM(norm_first=norm_first), seed), lm_batch(seed, V, key=None),
                         logits_ce)


def _dcgan(seed: int) -> Built:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 64, 64, generator=g).clamp(-1, 1)
    return _seeded(DCGANDiscriminator, seed), (x, torch.tensor([1.0, 0.0, 1.0, 0.0])), F.binary_cross_entropy


def _torch_healthy() -> list[Case]:
    return [
        Case("torch/word_lm_lstm", "torch", "rnn", _rnn_lm("LSTM")),
        Case("torch/word_lm_gru", "torch", "rnn", _rnn_lm("GRU")),
        Case("torch/transformer_lm_postln", "torch", "decoder", _tf_lm(False)),
        Case("torch/transformer_lm_preln", "torch", "decoder", _tf_lm(True)),
        Case("torch/dcgan_discriminator", "torch", "cnn", _dcgan),
    ]


# -- independent measurements (plain autograd) for the sick variants --------------------------
def output_grad_rms(model: nn.Module, batch: Batch, loss_fn: Callable, names: Sequence[str]) -> dict[str, float]:
    """RMS per element of ``dL/d output`` of the named modules, by ``torch.autograd.grad`` (train mode)."""
    outs: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            outs[name] = out[0] if isinstance(out, tuple) else out
        handles.append(modules[name].register_forward_hook(hook))
    try:
        model.train()
        inputs, targets = batch
        loss = loss_fn(call(model, inputs), targets)
        grads = torch.autograd.grad(loss, [outs[n] for n in names], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    return {n: (float(g.pow(2).mean().sqrt()) if g is not None else 0.0) for n, g in zip(names, grads)}


def _ratio_verifier(build: Callable[[int], Built], first: str, last: str) -> Callable[[int], dict[str, float]]:
    def verify(seed: int) -> dict[str, float]:
        model, batch, loss_fn = build(seed)
        rms = output_grad_rms(model, batch, loss_fn, [first, last])
        return {"first_rms": rms[first], "last_rms": rms[last], "first_over_last": rms[first] / rms[last]}
    return verify


def _nonfinite_verifier(build: Callable[[int], Built]) -> Callable[[int], dict[str, float]]:
    def verify(seed: int) -> dict[str, float]:
        model, (inputs, targets), loss_fn = build(seed)
        model.train()
        loss = loss_fn(call(model, inputs), targets)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        bad = sum(1 for g in grads if g is not None and not bool(torch.isfinite(g).all()))
        return {"loss_finite": float(math.isfinite(float(loss.detach()))), "nonfinite_grad_params": float(bad),
                "params": float(len(params))}
    return verify


def _divergence_verifier(build: Callable[[int], Built], optimizer: Callable[[nn.Module], torch.optim.Optimizer],
                         steps: int) -> Callable[[int], dict[str, float]]:
    """Plain training loop: the first loss, the largest finite loss, the step of the first non-finite loss."""
    def verify(seed: int) -> dict[str, float]:
        model, (inputs, targets), loss_fn = build(seed)
        model.train()
        opt = optimizer(model)
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(call(model, inputs), targets)
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                break
            loss.backward()
            opt.step()
        finite = [v for v in losses if math.isfinite(v)]
        first_bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), -1)
        return {"first_loss": losses[0], "max_finite_loss": max(finite), "first_nonfinite_step": float(first_bad),
                "max_over_first": max(finite) / losses[0]}
    return verify


def dead_fraction(out: torch.Tensor) -> float:
    """Fraction of the units of an activation output (channels of a ``[B, C, H, W]`` map, else the last axis)
    that are exactly 0 for every sample and position."""
    a = out.movedim(1, -1) if out.dim() == 4 else out
    return float((a.reshape(-1, a.shape[-1]) == 0).all(dim=0).float().mean())


def _dead_verifier(build: Callable[[int], Built], optimizer: Callable[[nn.Module], torch.optim.Optimizer],
                   steps: int, name: str, fresh: int = 64) -> Callable[[int], dict[str, float]]:
    """Plain training loop of ``steps`` steps; the dead fraction of module ``name``'s output (a forward hook):
    at step 0 and at the last step (train mode, on the batch), then on ``fresh`` new images (eval mode)."""
    def verify(seed: int) -> dict[str, float]:
        model, (inputs, targets), loss_fn = build(seed)
        seen: list[torch.Tensor] = []
        h = dict(model.named_modules())[name].register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
        try:
            model.train()
            opt = optimizer(model)
            first = last = 0.0
            for step in range(steps):
                seen.clear()
                opt.zero_grad()
                loss = loss_fn(call(model, inputs), targets)
                first = dead_fraction(seen[0]) if step == 0 else first
                last = dead_fraction(seen[0])
                loss.backward()
                opt.step()
            model.eval()
            seen.clear()
            with torch.no_grad():
                call(model, images(seed + 1000, n=fresh, size=inputs.shape[-1])[0])
            return {"dead_frac_init": first, "dead_frac_last": last, "dead_frac_fresh": dead_fraction(seen[0]),
                    "final_loss": float(loss.detach())}
        finally:
            h.remove()
    return verify


def _time_ratio_verifier(build: Callable[[int], Built]) -> Callable[[int], dict[str, float]]:
    """Gradient of the last position's loss w.r.t. the RNN input at the first step over that at the last step."""
    def verify(seed: int) -> dict[str, float]:
        model, (x, y), _ = build(seed)
        model.eval()  # no dropout: the pure recurrence
        emb = model.encoder(x).detach().requires_grad_(True)
        out, _ = model.rnn(emb)
        loss = F.cross_entropy(model.decoder(out[:, -1]), y[:, -1])
        (g,) = torch.autograd.grad(loss, emb)
        first, last = float(g[:, 0].norm()), float(g[:, -1].norm())
        return {"first_step": first, "last_step": last, "first_over_last": first / last}
    return verify


# -- deriving sick variants by replacing modules -------------------------------------------------
def replace_modules(model: nn.Module, pred: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace every submodule ``m`` with ``pred(m)`` by ``make(m)``, in place; returns ``model``."""
    for name, child in list(model.named_children()):
        if pred(child):
            setattr(model, name, make(child))
        else:
            replace_modules(child, pred, make)
    return model


_ACTS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)


def sigmoid_acts(model: nn.Module) -> nn.Module:
    return replace_modules(model, lambda m: isinstance(m, _ACTS), lambda m: nn.Sigmoid())


def no_norms(model: nn.Module) -> nn.Module:
    return replace_modules(model, lambda m: isinstance(m, _NORMS), lambda m: nn.Identity())


def scale_weights(model: nn.Module, types: tuple[type, ...], factor: float) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, types):
                m.weight.mul_(factor)
    return model


def _derived(base: Callable[[int], Built], *edits: Callable[[nn.Module], nn.Module]) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        model, batch, loss_fn = base(seed)
        for edit in edits:
            model = edit(model)
        return model, batch, loss_fn
    return build


def _nan_batch(base: Callable[[int], Built]) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        model, (x, y), loss_fn = base(seed)
        x = x.clone()
        x[0, 0, 0, 0] = float("nan")
        return model, (x, y), loss_fn
    return build


def _inf_weight(base: Callable[[int], Built], param: str) -> Callable[[int], Built]:
    def build(seed: int) -> Built:
        model, batch, loss_fn = base(seed)
        with torch.no_grad():
            model.get_parameter(param).view(-1)[0] = float("inf")
        return model, batch, loss_fn
    return build


def _no_residual_vit(model: nn.Module) -> nn.Module:
    """torchvision ViT whose encoder blocks drop both residual adds (the class of each block is swapped)."""
    from torchvision.models.vision_transformer import EncoderBlock

    class PlainEncoderBlock(EncoderBlock):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            x, _ = self.self_attention(self.ln_1(input), self.ln_1(input), self.ln_1(input), need_weights=False)
            return self.mlp(self.ln_2(self.dropout(x)))

    for blk in model.encoder.layers:
        blk.__class__ = PlainEncoderBlock
    return model


def _reset_head(model: nn.Module) -> nn.Module:
    model.heads.head.reset_parameters()
    return model


def _sgd(lr: float, momentum: float = 0.0) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda m: torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum)


def _sick(id: str, library: str, family: str, build: Callable[[int], Built], expect: tuple[str, ...],
          layers: tuple[str, ...], verify: Callable[[int], dict[str, float]], note: str, **kw: Any) -> Case:
    return Case(id, library, family, build, expect, layers, verify=verify, note=note, **kw)


def _sick_cases() -> list[Case]:
    van, exp, nonf = ("vanishing_gradients",), ("exploding_gradients",), ("nonfinite_gradients",)
    out: list[Case] = []
    add = out.append

    vgg_sig = _derived(_tv("vgg11", size=32), sigmoid_acts)
    add(_sick("torchvision/vgg11-sigmoid", "torchvision", "cnn", vgg_sig, van, ("features.0",),
              _ratio_verifier(vgg_sig, "features.0", "classifier.6"), "every ReLU replaced by Sigmoid"))
    vgg_x5 = _derived(_tv("vgg11", size=32), lambda m: scale_weights(m, (nn.Conv2d,), 5.0))
    add(_sick("torchvision/vgg11-conv-x5", "torchvision", "cnn", vgg_x5, exp, ("features.0",),
              _ratio_verifier(vgg_x5, "features.0", "classifier.6"), "every conv weight scaled x5 (no BN)"))
    r18_sig = _derived(_tv("resnet18"), no_norms, sigmoid_acts)
    add(_sick("torchvision/resnet18-nobn-sigmoid", "torchvision", "cnn", r18_sig, van, ("conv1",),
              _ratio_verifier(r18_sig, "conv1", "fc"), "BatchNorm -> Identity, ReLU -> Sigmoid"))
    r18_nan = _nan_batch(_tv("resnet18"))
    add(_sick("torchvision/resnet18-nan-input", "torchvision", "cnn", r18_nan, nonf, ("conv1",),
              _nonfinite_verifier(r18_nan), "one NaN pixel in the batch"))
    # a batch of 8: with 2 images BatchNorm over layer4's 1x1 maps sees 2 values per channel and the first
    # step at lr 10 fits the batch exactly (loss 0) instead of diverging
    r18, r18_opt = _tv("resnet18", size=32, n=8), _sgd(10.0, 0.9)
    add(_sick("torchvision/resnet18-sgd-lr10", "torchvision", "cnn", r18, exp, ("conv1", "fc"),
              _divergence_verifier(r18, r18_opt, 20), "SGD lr=10 momentum 0.9: the loss grows to ~1e13",
              optimizer=r18_opt, steps=20))
    sq, sq_opt = _tv("squeezenet1_1"), _sgd(1.0, 0.9)
    add(_sick("torchvision/squeezenet1_1-sgd-lr1", "torchvision", "cnn", sq, nonf, ("features.0", "classifier.1"),
              _divergence_verifier(sq, sq_opt, 20), "SGD lr=1 momentum 0.9: the loss is NaN by step 3",
              optimizer=sq_opt, steps=20))
    # no change but the training: AdamW at its default-ish lr 1e-3 memorises the 2-image batch (loss 0 by
    # step ~30) and turns 8 of the 10 class-map ReLUs off for every input; the default profile measures
    # layers at steps 0 and 50, so the case runs 51 steps (docs/diagnosis.md, "Dead units in short runs")
    sq_adamw = lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3)  # noqa: E731
    add(_sick("torchvision/squeezenet1_1-adamw-dead", "torchvision", "cnn", sq, ("dead_units",),
              ("classifier.1", "classifier.2"), _dead_verifier(sq, sq_adamw, 51, "classifier.2"),
              "AdamW lr=1e-3, 51 steps: most class-map ReLUs output 0 for every input", optimizer=sq_adamw, steps=51))
    mb_sig = _derived(_tv("mobilenet_v2"), no_norms, sigmoid_acts)
    add(_sick("torchvision/mobilenet_v2-nobn-sigmoid", "torchvision", "cnn", mb_sig, van, ("features.0.0",),
              _ratio_verifier(mb_sig, "features.0.0", "classifier.1"), "BatchNorm -> Identity, ReLU6 -> Sigmoid"))
    sq_sig = _derived(_tv("squeezenet1_1"), sigmoid_acts)
    add(_sick("torchvision/squeezenet1_1-sigmoid", "torchvision", "cnn", sq_sig, van, ("features.0",),
              _ratio_verifier(sq_sig, "features.0", "classifier.1"), "every ReLU replaced by Sigmoid"))
    dn_sig = _derived(_tv("densenet121"), no_norms, sigmoid_acts)
    add(_sick("torchvision/densenet121-nobn-sigmoid", "torchvision", "cnn", dn_sig, van, ("features.conv0",),
              _ratio_verifier(dn_sig, "features.conv0", "classifier"), "BatchNorm -> Identity, ReLU -> Sigmoid"))
    # torchvision zero-initialises the ViT head (no gradient below it at init): the variant gives it Linear's init
    vit_plain = _derived(_tv_vit, _no_residual_vit, no_norms, sigmoid_acts, _reset_head)
    add(_sick("torchvision/vit_tiny-noresidual-sigmoid", "torchvision", "vit", vit_plain, van, ("conv_proj",),
              _ratio_verifier(vit_plain, "conv_proj", "heads.head"),
              "residual adds and LayerNorms removed, GELU -> Sigmoid"))

    gpt2 = _hf_lm("GPT2LMHeadModel", "GPT2Config", **_gpt2_cfg())
    gpt2_inf = _inf_weight(gpt2, "transformer.h.1.mlp.c_fc.weight")
    add(_sick("transformers/gpt2-inf-weight", "transformers", "decoder", gpt2_inf, nonf, ("transformer.h.1.mlp.c_fc",),
              _nonfinite_verifier(gpt2_inf), "one weight of h.1.mlp.c_fc set to inf"))
    gpt2_opt = _sgd(30.0, 0.9)
    add(_sick("transformers/gpt2-sgd-lr30", "transformers", "decoder", gpt2, ("nonfinite_gradients",),
              ("transformer.wte", "lm_head", "transformer.h.0.attn.c_attn"), _divergence_verifier(gpt2, gpt2_opt, 20),
              "SGD lr=30 momentum 0.9: training diverges", optimizer=gpt2_opt, steps=20))
    gpt2_deep = _hf_lm("GPT2LMHeadModel", "GPT2Config", **_gpt2_cfg(n_layer=6, initializer_range=0.2))
    gpt2_noln = _derived(gpt2_deep, lambda m: replace_modules(m, lambda c: isinstance(c, nn.LayerNorm),
                                                              lambda c: nn.Identity()))
    add(_sick("transformers/gpt2-noln-init0.2", "transformers", "decoder", gpt2_noln, exp, ("transformer.wte",
              "transformer.h.0.attn.c_attn"),
              _ratio_verifier(gpt2_noln, "transformer.h.0.attn.c_attn", "transformer.h.5.mlp.c_proj"),
              "6 layers, LayerNorms removed, initializer_range 0.2 (x10): the residual stream grows layer by layer"))
    bert_deep = _hf_lm("BertForMaskedLM", "BertConfig", **dict(_ENC, num_hidden_layers=6, initializer_range=0.2))
    bert_noln = _derived(bert_deep, no_norms)
    add(_sick("transformers/bert-noln-init0.2", "transformers", "encoder", bert_noln, exp,
              ("bert.embeddings.word_embeddings", "bert.encoder.layer.0.attention.self.query"),
              _ratio_verifier(bert_noln, "bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.5.output.dense"),
              "6 layers, LayerNorms removed, initializer_range 0.2 (x10)"))

    lstm_x5 = _derived(_rnn_lm("LSTM"), lambda m: _scale_recurrent(m, 5.0))
    add(_sick("torch/word_lm_lstm-recurrent-x5", "torch", "rnn", lstm_x5, exp, ("rnn",),
              _time_ratio_verifier(lstm_x5), "recurrent weights scaled x5: the gradient grows back through time"))
    rnn_x3 = _derived(_rnn_lm("RNN_TANH"), lambda m: _orthogonal_recurrent(m, 3.0))
    add(_sick("torch/word_lm_rnn_tanh-orthogonal-x3", "torch", "rnn", rnn_x3, exp, ("rnn",),
              _time_ratio_verifier(rnn_x3), "RNN_TANH, recurrent weights orthogonal with gain 3"))
    dc_sig = _derived(_dcgan, no_norms, sigmoid_acts)
    add(_sick("torch/dcgan_discriminator-nobn-sigmoid", "torch", "cnn", dc_sig, van, ("main.0",),
              _ratio_verifier(dc_sig, "main.0", "main.11"), "BatchNorm -> Identity, LeakyReLU -> Sigmoid"))

    timm_r18 = _derived(_timm("resnet18"), no_norms, sigmoid_acts)
    add(_sick("timm/resnet18-nobn-sigmoid", "timm", "cnn", timm_r18, van, ("conv1",),
              _ratio_verifier(timm_r18, "conv1", "fc"), "BatchNorm -> Identity, ReLU -> Sigmoid"))

    # no change: the library's own init is sick (docs/corpus.md, "Second held-out sweep")
    effnet = _hf_image("EfficientNetForImageClassification", "EfficientNetConfig", size=64, image_size=64,
                       width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320)
    add(_sick("transformers/efficientnet", "transformers", "cnn", effnet, van,
              ("efficientnet.embeddings.convolution",), _efficientnet_verifier(effnet),
              "its own init: _init_weights draws every BatchNorm gain from N(0, 0.02); the activations reach "
              "1e-33 at top_conv and no gradient reaches the stem"))
    return out


def _efficientnet_verifier(build: Callable[[int], Built]) -> Callable[[int], dict[str, float]]:
    """The stem's output gradient over the classifier's (plain autograd), and the activation std at ``top_conv``
    (a forward hook)."""
    ratio = _ratio_verifier(build, "efficientnet.embeddings.convolution", "classifier")

    def verify(seed: int) -> dict[str, float]:
        model, (inputs, _), _ = build(seed)
        seen: list[float] = []
        h = model.efficientnet.encoder.top_conv.register_forward_hook(
            lambda _m, _i, out: seen.append(float(out.detach().double().std())))
        try:
            model.train()
            with torch.no_grad():
                call(model, inputs)
        finally:
            h.remove()
        return {**ratio(seed), "top_conv_std": seen[0]}
    return verify


def _scale_recurrent(model: nn.Module, factor: float) -> nn.Module:
    with torch.no_grad():
        for name, p in model.rnn.named_parameters():
            if name.startswith("weight_hh"):
                p.mul_(factor)
    return model


def _orthogonal_recurrent(model: nn.Module, gain: float) -> nn.Module:
    with torch.no_grad():
        for name, p in model.rnn.named_parameters():
            if name.startswith("weight_hh"):
                nn.init.orthogonal_(p, gain=gain)
    return model


# -- rules no sick case covered: saturated units, vanishing through time, stalled layers --------------------
def _last_step_ce(out: Any, targets: torch.Tensor) -> torch.Tensor:
    """A sequence classifier's loss: cross entropy of the last step's output only."""
    return F.cross_entropy(out[:, -1], targets[:, -1])


def _rnn_classifier(rnn_type: str) -> Callable[[int], Built]:
    """The word-level RNN model read as a sequence classifier: 32 steps, the loss on the last one."""
    return lambda seed: (_seeded(lambda: RNNModel(rnn_type), seed), lm_batch(seed, V, T=32, key=None),
                         _last_step_ce)


def _timm_raw_pixels(name: str, size: int = 32, n: int = 2, **kw: Any) -> Callable[[int], Built]:
    """A timm model fed the bytes of its images, 0..255 as floats, as a loader without ``Normalize`` gives them."""
    def build(seed: int) -> Built:
        model, _, loss_fn = _timm(name, size=size, n=n, **kw)(seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 256, (n, 3, size, size), generator=g).float()
        return model, (x, torch.randint(0, 10, (n,), generator=g)), loss_fn
    return build


def _timm_act(name: str) -> Any:
    from timm.layers import get_act_layer

    return get_act_layer(name)


def _vgg11_tanh_raw(seed: int) -> Built:
    # mlp_ratio 1/8: timm's 4096-wide pre-logits cost seconds per check and change nothing before them
    return _timm_raw_pixels("vgg11", act_layer=_timm_act("tanh"), mlp_ratio=0.125)(seed)


def _saturation_verifier(build: Callable[[int], Built], conv: str, act: str) -> Callable[[int], dict[str, float]]:
    """Std of ``conv``'s output and the fraction of ``act``'s (tanh) outputs where tanh' = 1 - y^2 < 0.1."""
    def verify(seed: int) -> dict[str, float]:
        model, (x, _), _ = build(seed)
        modules = dict(model.named_modules())
        seen: dict[str, torch.Tensor] = {}

        def keep(key: str) -> Callable[..., None]:
            def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
                seen[key] = out.detach().clone()  # a copy: timm's tanh works in place on the conv's output
            return hook

        hooks = [modules[conv].register_forward_hook(keep("pre")), modules[act].register_forward_hook(keep("y"))]
        try:
            model.train()
            with torch.no_grad():
                call(model, x)
        finally:
            for h in hooks:
                h.remove()
        slope = 1 - seen["y"].double() ** 2
        return {"pre_std": float(seen["pre"].double().std()), "sat_frac": float((slope < 0.1).double().mean()),
                "mean_slope": float(slope.mean())}
    return verify


def _adamw(lr: float = 1e-3, eps: float = 1e-8) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda m: torch.optim.AdamW(m.parameters(), lr=lr, eps=eps)


def _stall_verifier(build: Callable[[int], Built], optimizer: Callable[[nn.Module], torch.optim.Optimizer],
                    steps: int, stalled: str, moving: str) -> Callable[[int], dict[str, float]]:
    """Plain training loop: the largest gradient norm of ``stalled`` (a parameter name) and its optimizer's eps,
    and the median relative update ||dW|| / ||W|| of ``stalled`` and of ``moving`` beside it."""
    def verify(seed: int) -> dict[str, float]:
        model, (inputs, targets), loss_fn = build(seed)
        model.train()
        opt = optimizer(model)
        p = dict(model.named_parameters())
        grads: list[float] = []
        moved: dict[str, list[float]] = {stalled: [], moving: []}
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(call(model, inputs), targets).backward()
            grads.append(float(p[stalled].grad.norm()))  # type: ignore[union-attr]
            before = {n: p[n].detach().clone() for n in moved}
            opt.step()
            for n in moved:
                moved[n].append(float((p[n].detach() - before[n]).norm() / before[n].norm()))
        s, m = (float(torch.tensor(moved[n], dtype=torch.float64).quantile(0.5)) for n in (stalled, moving))
        return {"stalled_grad_max": max(grads), "eps": float(opt.param_groups[0]["eps"]), "stalled_update": s,
                "moving_update": m, "stalled_over_moving": s / m}
    return verify


def _rule_cases() -> list[Case]:
    """Sick cases for the rules that had none: saturated units, vanishing through time, stalled layers
    (tests/diagnosis/test_rules_on_real_models.py has their plain-PyTorch checks)."""
    sat, van, stall = ("saturated_units",), ("vanishing_gradients",), ("stalled_layers",)
    out: list[Case] = []
    add = out.append
    add(_sick("timm/vgg11-tanh-raw-pixels", "timm", "cnn", _vgg11_tanh_raw, sat, ("features.0", "features.1"),
              _saturation_verifier(_vgg11_tanh_raw, "features.0", "features.1"),
              "act_layer tanh (timm's own factory), inputs the raw 0-255 bytes of the images (no Normalize): "
              "96-97% of the first tanh's outputs sit where tanh' < 0.1 (0% on standardised pixels)"))
    rnn = _rnn_classifier("RNN_TANH")
    add(_sick("torch/word_rnn_tanh-classifier-T32", "torch", "rnn", rnn, van, ("rnn",), _time_ratio_verifier(rnn),
              "the word-level RNN_TANH model read as a sequence classifier (the loss on the last of 32 steps), "
              "PyTorch's init: spectral radius 0.6, the first step gets ~2e-7 of the last step's gradient"))
    lstm = _rnn_classifier("LSTM")
    add(_sick("torch/word_lstm-classifier-T32", "torch", "rnn", lstm, van, ("rnn",), _time_ratio_verifier(lstm),
              "the word-level LSTM read as a sequence classifier (the loss on the last of 32 steps), PyTorch's "
              "init: forget gates near 0.5, the first step gets ~5e-6 of the last step's gradient"))
    # no change: MobileBERT's own init (the healthy case's config) under the usual optimizer
    mbert = _hf_lm("MobileBertForMaskedLM", "MobileBertConfig", **_MOBILEBERT)
    pre = "mobilebert.encoder.layer.0.attention.self."
    add(_sick("transformers/mobilebert-adamw", "transformers", "encoder", mbert, stall, (pre + "query", pre + "key"),
              _stall_verifier(mbert, _adamw(), 20, pre + "query.weight", pre + "value.weight"),
              "its own init under AdamW (lr 1e-3, eps 1e-8): NoNorm and initializer_range 0.02 leave layer 0's "
              "query/key gradients at ~1e-10, below Adam's eps, so weight decay alone moves them (1e-5 of their "
              "norm per step, the value beside them 1e-2)", optimizer=_adamw(), steps=20))
    return out


# -- the catalogue ----------------------------------------------------------------------------
def cases() -> list[Case]:
    """Every case of the corpus: the healthy real architectures, then the sick variants."""
    return (_transformers_healthy() + _torchvision_healthy() + _timm_healthy() + _torch_healthy()
            + _held_out_healthy() + _held_out_2_healthy() + _held_out_3_healthy() + _sick_cases() + _rule_cases())


def run_case(case: Case, seed: int = 0) -> Any:
    """Diagnose ``case`` the way a user would: ``gradvet.check``, or a Monitor loop with its optimizer.

    Returns:
        The :class:`gradvet.Report`.
    """
    import gradvet

    model, batch, loss_fn = case.build(seed)
    if case.optimizer is None:
        return gradvet.check(model, batch, loss_fn)
    inputs, targets = batch
    opt = case.optimizer(model)
    with gradvet.Monitor(model, optimizer=opt) as monitor:
        for _ in range(case.steps):
            opt.zero_grad()
            loss = loss_fn(call(model, inputs), targets)
            loss.backward()
            monitor.step(loss)
            opt.step()
    return monitor.report()


def verdict_ok(case: Case, report: Any) -> tuple[bool, str]:
    """Whether ``report`` is the right verdict for ``case`` (and why not)."""
    sev = [f for f in report.findings if f.severity in ("warning", "error")]
    if case.healthy:
        return (not sev, "" if not sev else f"false alarm: {[(f.kind, f.severity, list(f.layers[:3])) for f in sev]}")
    for kind in case.expect:
        hits = [f for f in sev if f.kind == kind]
        if not hits:
            return False, f"missed {kind}; got {[f.kind for f in sev]}"
        if case.layers and not any(name in f.layers for f in hits for name in case.layers):
            return False, f"{kind} named {[list(f.layers[:4]) for f in hits]}, expected one of {list(case.layers)}"
    return True, ""


def describe(report: Any) -> str:
    """``kind(severity)[first layers]`` for each warning/error finding; ``healthy`` if none."""
    sev = [f for f in report.findings if f.severity in ("warning", "error")]
    return "; ".join(f"{f.kind}({f.severity}) {list(f.layers[:3])}" for f in sev) or "healthy"


# -- full size (by hand) ------------------------------------------------------------------------
def full_size_cases() -> list[Case]:
    """Production-size models at 224 px / 2 x 128 tokens: ``python -m gradvet.corpus --full-size``."""
    def lm(cls: str, cfg: str, **kw: Any) -> Callable[[int], Built]:
        return lambda s: (_seeded(_hf(cls, cfg, **kw), s), lm_batch(s, kw.get("vocab_size", 30522), T=128),
                          logits_ce)
    return [
        Case("transformers/gpt2-124M", "transformers", "decoder", lm("GPT2LMHeadModel", "GPT2Config", vocab_size=50257)),
        Case("transformers/bert-base", "transformers", "encoder", lm("BertForMaskedLM", "BertConfig", vocab_size=30522)),
        Case("transformers/llama-16x1024", "transformers", "decoder",
             lm("LlamaForCausalLM", "LlamaConfig", vocab_size=32000, hidden_size=1024, intermediate_size=2816,
                num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16)),
        Case("torchvision/resnet50-224", "torchvision", "cnn", _tv("resnet50", size=224)),
        Case("torchvision/vgg16_bn-224", "torchvision", "cnn", _tv("vgg16_bn", size=224)),
        Case("torchvision/mobilenet_v3_large-224", "torchvision", "cnn", _tv("mobilenet_v3_large", size=224)),
        Case("timm/vit_base_patch16_224", "timm", "vit", _timm("vit_base_patch16_224", size=224)),
        Case("timm/convnext_tiny-224", "timm", "cnn", _timm("convnext_tiny", size=224)),
        Case("timm/efficientnet_b0-224", "timm", "cnn", _timm("efficientnet_b0", size=224)),
        Case("timm/mobilenetv3_large_100-224", "timm", "cnn", _timm("mobilenetv3_large_100", size=224)),
    ]


def main(argv: Optional[list[str]] = None) -> None:  # pragma: no cover - a report printer
    from rich.console import Console
    from rich.table import Table

    argv = sys.argv[1:] if argv is None else argv
    only = argv[argv.index("--only") + 1] if "--only" in argv else ""
    chosen = full_size_cases() if "--full-size" in argv else cases()
    chosen = [c for c in chosen if only in c.id]
    console = Console()
    rows: list[tuple[str, str, str, str, str, float]] = []
    for case in chosen:
        if not case.available:
            rows.append((case.id, case.library, "healthy" if case.healthy else "sick", "skipped", "-", 0.0))
            continue
        t0 = time.perf_counter()
        report = run_case(case)
        dt = time.perf_counter() - t0
        ok, why = verdict_ok(case, report)
        rows.append((case.id, case.library, "healthy" if case.healthy else "sick: " + ",".join(case.expect),
                     describe(report), "right" if ok else "WRONG", dt))
        console.print(f"{case.id}: {'right' if ok else 'WRONG'} {why} ({dt:.1f} s)", highlight=False)
    table = Table(title="gradvet on real architectures")
    for col in ("model", "library", "truth", "gradvet verdict", "right", "seconds"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r[:5], f"{r[5]:.1f}")
    console.print(table)
    healthy_s = sum(r[5] for r in rows if r[2] == "healthy")
    console.print(f"total {sum(r[5] for r in rows):.1f} s (healthy {healthy_s:.1f} s); "
                  f"right {sum(r[4] == 'right' for r in rows)}/{len(rows)}")
    if "--markdown" in argv:
        print("| model | library | truth | gradvet verdict | right | seconds |\n|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.1f} |")


if __name__ == "__main__":  # pragma: no cover
    main()
