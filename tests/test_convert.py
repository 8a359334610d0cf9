"""`hf-ssl convert`: original checkpoints -> hf_ssl models with the original's features.

No downloads: each test builds a reference model with the original's architecture and key layout from a real
library (timm's VisionTransformer for the ViTs, torchvision's ResNets), randomises it, saves its weights in the
original file layout (prefixes, nesting, `.pth.tar` dicts, `args` as an `argparse.Namespace`), converts the file
and compares features (max abs diff <= 1e-5, fp32) at the native size and, where the original interpolates its
position table, at other sizes with the original's interpolation rule.
"""

import argparse
import json
import math
import os
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from timm.layers import SwiGLUPacked
from timm.models.beit import Beit
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.models import resnet18, resnet50
from transformers import AutoImageProcessor, AutoModel

from hf_ssl import DinoForPreTraining, DinoModel, SSLResNetModel
from hf_ssl.cli import main
from hf_ssl.convert.export import backbone_of, to_transformers
from hf_ssl.convert.originals import CONVERTERS, convert, convert_to_folder

IMG, PATCH, DIM, DEPTH, HEADS = 32, 8, 64, 2, 4
ATOL = 1e-5
# The largest difference seen per method; `HF_SSL_PRINT_DIFFS=1 pytest -s` prints them (docs/conversion.md's table).
MAX_DIFF = {}


@pytest.fixture(scope="module", autouse=True)
def print_max_diffs():
    yield
    if os.environ.get("HF_SSL_PRINT_DIFFS"):
        print("\n" + "\n".join(f"max abs diff {name}: {diff:.1e}" for name, diff in sorted(MAX_DIFF.items())))


def randomize_(module: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)
        for name, buffer in module.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)


def timm_vit(img_size=IMG, seed=0, dim=DIM, heads=HEADS, **kwargs) -> VisionTransformer:
    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=img_size, patch_size=PATCH, embed_dim=dim, depth=DEPTH, num_heads=heads, qkv_bias=True,
        num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs,
    ).eval()
    randomize_(model, seed)
    return model


def pixels(height=IMG, width=IMG, seed=0):
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(seed))


def prefixed(prefix: str, state_dict: dict) -> dict:
    return {prefix + key: value for key, value in state_dict.items()}


def assert_features(name, ours, expected):
    diff = (ours - expected).abs().max().item()
    MAX_DIFF[name] = max(diff, MAX_DIFF.get(name, 0.0))
    assert ours.shape == expected.shape
    assert diff <= ATOL, f"{name}: max abs diff {diff}"


def original_resize(pos, grid_h, grid_w, num_prefix=1, offset=0.1, scalar=False):
    """The originals' position-table resize: DINO/iBOT/DINOv2 `scale_factor=((g + 0.1) / M)` (the first factor is
    the height's), MSN a single factor sqrt(npatch / N)."""
    prefix, patch = pos[:, :num_prefix], pos[:, num_prefix:]
    side = math.isqrt(patch.shape[1])
    patch = patch.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if scalar:
        scale = (math.sqrt(grid_h * grid_w / side**2),) * 2
    else:
        scale = ((grid_h + offset) / side, (grid_w + offset) / side)
    patch = F.interpolate(patch, scale_factor=scale, mode="bicubic", align_corners=False)
    return torch.cat([prefix, patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)], dim=1)


def reference_at(reference: VisionTransformer, height: int, width: int, **resize) -> VisionTransformer:
    """The reference model on a (height, width) grid with its position table resized by the originals' rule."""
    state = reference.state_dict()
    state["pos_embed"] = original_resize(state["pos_embed"], height // PATCH, width // PATCH, **resize)
    resized = VisionTransformer(
        img_size=(height, width), patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, qkv_bias=True,
        num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6),
        init_values=0.1 if hasattr(reference.blocks[0].ls1, "gamma") else None,
    ).eval()
    resized.load_state_dict(state)
    return resized


def cls_features(model, x):
    with torch.no_grad():
        return model.forward_features(x)[:, 0]


def ours(model, x):
    with torch.no_grad():
        return model(x).pooler_output


# ------------------------------------------------------------------------------------------------------------ DINO


def dino_head(seed, out_dim=32, bottleneck=16, hidden=48):
    """The original DINOHead's layers and state-dict layout (`mlp.N`, weight-normalised `last_layer`)."""
    torch.manual_seed(seed)
    head = nn.Module()
    head.mlp = nn.Sequential(nn.Linear(DIM, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                             nn.Linear(hidden, bottleneck))
    head.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
    randomize_(head, seed)
    return head


def dino_head_forward(head, x):
    return head.last_layer(F.normalize(head.mlp(x), dim=-1, p=2))


def test_dino_plain_state_dict_cli(tmp_path):
    reference = timm_vit()
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(reference.state_dict(), path)
    out = tmp_path / "dino-vits16"
    assert main(["convert", "dino", "--checkpoint", str(path), "--out", str(out), "--num-heads", str(HEADS)]) == 0

    model = AutoModel.from_pretrained(out).eval()
    assert type(model) is DinoModel
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.crop_size == {"height": IMG, "width": IMG}
    report = json.loads((out / "conversion.json").read_text())
    assert report["created_tensors"] == ["embeddings.mask_token"] and report["unused_tensors"] == {}
    assert len(report["checkpoint_sha256"]) == 64
    x = pixels()
    assert_features("dino", ours(model, x), cls_features(reference, x))
    # other sizes: DINO's bicubic resize with scale_factor (g + 0.1) / M; the first factor is the height's
    for height, width in [(48, 48), (32, 48)]:
        x = pixels(height, width, seed=1)
        assert_features("dino", ours(model, x), cls_features(reference_at(reference, height, width), x))


def test_structure_fused_qkv_and_layernorm_eps(tmp_path):
    """LayerNorm eps 1e-6 everywhere (a 1e-12 eps moves features only ~3e-6, so check it structurally), the fused
    qkv kept in q, k, v order, and the split into q/k/v thirds when exported to plain transformers."""
    reference = timm_vit()
    model = convert("dino", reference.state_dict(), num_heads=HEADS).model
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * DEPTH + 1 and all(norm.eps == 1e-6 for norm in norms)
    assert model.config.backbone_config.hidden_act == "gelu"  # exact erf GELU, as the originals
    qkv = reference.state_dict()["blocks.1.attn.qkv.weight"]
    assert torch.equal(model.backbone.layers[1].attn.qkv.weight, qkv)
    exported = to_transformers(model).state_dict()
    for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert torch.equal(exported[f"layers.1.attention.{name}.weight"], qkv[index * DIM:(index + 1) * DIM])


def dino_full_checkpoint(tmp_path, teacher, student, student_head, teacher_head, center):
    checkpoint = {
        "student": {**prefixed("module.backbone.", student.state_dict()),
                    **prefixed("module.head.", student_head.state_dict())},
        "teacher": {**prefixed("backbone.", teacher.state_dict()), **prefixed("head.", teacher_head.state_dict())},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 3,
        "args": argparse.Namespace(arch="vit_small", patch_size=PATCH, out_dim=32, norm_last_layer=False,
                                   momentum_teacher=0.99, teacher_temp=0.07, warmup_teacher_temp=0.04,
                                   warmup_teacher_temp_epochs=10, freeze_last_layer=2, drop_path_rate=0.1),
        "dino_loss": {"center": center},
        "fp16_scaler": None,
    }
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    return path


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")  # the original's weight_g/weight_v layout
def test_dino_full_checkpoint_gives_the_pretraining_model_with_heads(tmp_path):
    teacher, student = timm_vit(seed=0), timm_vit(seed=1)
    teacher_head, student_head = dino_head(2), dino_head(3)
    center = torch.randn(1, 32)
    path = dino_full_checkpoint(tmp_path, teacher, student, student_head, teacher_head, center)
    out = tmp_path / "converted"
    conversion = convert_to_folder("dino", path, out, num_heads=HEADS)
    model = conversion.model
    assert type(model) is DinoForPreTraining
    config = model.config
    assert (config.head_out_dim, config.head_bottleneck_dim, config.head_hidden_dim, config.head_num_layers) == (
        32, 16, 48, 3)
    assert (config.teacher_temp, config.warmup_teacher_temp_epochs, config.freeze_last_layer_epochs) == (0.07, 10, 2)
    assert not config.norm_last_layer and config.momentum_teacher == 0.99
    assert config.backbone_config.drop_path_rate == 0.1
    torch.testing.assert_close(model.center, center, atol=0, rtol=0)
    assert model.teacher_temperature.item() == pytest.approx(0.04 + 3 / 9 * 0.03)  # epoch 3 of the warm-up
    assert not any(p.requires_grad for p in model.dino.parameters())

    x = pixels()
    with torch.no_grad():
        teacher_features = model.dino(x).pooler_output
        student_features = model.student(x).pooler_output
        assert_features("dino", teacher_features, cls_features(teacher, x))
        assert_features("dino", student_features, cls_features(student, x))
        assert_features("dino", model.teacher_head(teacher_features), dino_head_forward(teacher_head, cls_features(teacher, x)))
        assert_features("dino", model.student_head(student_features), dino_head_forward(student_head, cls_features(student, x)))
    # AutoModel on the saved pretraining model gives the teacher, the encoder DINO evaluates
    encoder = AutoModel.from_pretrained(out).eval()
    assert type(encoder) is DinoModel
    assert_features("dino", ours(encoder, x), cls_features(teacher, x))

    # --encoder-only: just the feature model; --encoder student: the student's backbone
    only = convert("dino", path, num_heads=HEADS, encoder_only=True)
    assert type(only.model) is DinoModel
    assert only.report["unused_tensors"] == {"outside the encoder prefix 'backbone.'": sorted(
        prefixed("head.", teacher_head.state_dict()))}
    assert "optimizer" in only.report["other_entries"] and "args" in only.report["other_entries"]
    assert_features("dino", ours(only.model, x), cls_features(teacher, x))
    as_student = convert("dino", path, num_heads=HEADS, encoder="student").model
    assert type(as_student) is DinoModel
    assert_features("dino", ours(as_student, x), cls_features(student, x))


# ---------------------------------------------------------------------------------------------------------- DINOv2


def dinov2_file(reference: VisionTransformer, swiglu: bool = False, cls_position=None) -> dict:
    """timm's weights in DINOv2's layout: `register_tokens`, `ls1.gamma`, `mlp.w12`/`w3`, `mask_token` (1, D), a
    position table with a CLS row. timm's `no_embed_class` models give the CLS no position: the file splits timm's
    CLS token into DINOv2's cls_token + its position row."""
    state = {}
    for key, value in reference.state_dict().items():
        if swiglu:
            key = key.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3.")
        state[key.replace("reg_token", "register_tokens")] = value
    if cls_position is not None:
        state["pos_embed"] = torch.cat([cls_position, state["pos_embed"]], dim=1)
        state["cls_token"] = state["cls_token"] - cls_position
    state["mask_token"] = torch.randn(1, DIM)
    return state


def test_dinov2_without_registers_interpolates_with_offset(tmp_path):
    reference = timm_vit(init_values=0.1)
    state = dinov2_file(reference)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(state, path)
    model = convert("dinov2", path, num_heads=HEADS).model
    backbone = backbone_of(model)
    assert backbone.config.layerscale_value is not None and backbone.config.interpolate_offset == 0.1
    assert torch.equal(backbone.embeddings.mask_token, state["mask_token"])
    for height, width in [(32, 32), (48, 48), (48, 32)]:
        x = pixels(height, width)
        expected = reference if height == width == IMG else reference_at(reference, height, width)
        assert_features("dinov2", ours(model, x), cls_features(expected, x))


def test_dinov2_with_registers_and_swiglu(tmp_path):
    """Registers sit between CLS and the patches without position; the reg models resize with size= and antialias
    (timm's dynamic_img_size does exactly that). SwiGLU: timm's packed fc1 = [gate; up] is DINOv2's w12."""
    reference = timm_vit(init_values=0.1, reg_tokens=4, no_embed_class=True, dynamic_img_size=True,
                         mlp_ratio=2 * 176 / DIM, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)
    state = dinov2_file(reference, swiglu=True, cls_position=torch.randn(1, 1, DIM))
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="hf-ssl convert dinov2"):
        convert("dino", path, num_heads=HEADS)  # DINO's interpolation would be wrong for it
    model = convert("dinov2", path, num_heads=HEADS).model
    backbone = backbone_of(model)
    config = backbone.config
    assert (config.num_register_tokens, config.use_swiglu_ffn, config.interpolate_offset,
            config.interpolate_antialias) == (4, True, 0.0, True)
    for height, width in [(32, 32), (48, 48), (32, 48)]:
        x = pixels(height, width)
        assert_features("dinov2", ours(model, x), cls_features(reference, x))

    # training dumps nest the blocks in FSDP chunks (blocks.<chunk>.<i>., here one block per chunk) under
    # teacher/backbone., beside the heads
    chunked = {}
    for key, value in state.items():
        if key.startswith("blocks."):
            key = f"blocks.{key.split('.')[1]}.{key[len('blocks.'):]}"
        chunked["backbone." + key] = value
    chunked["dino_head.last_layer.weight_v"] = torch.randn(8, 4)
    torch.save({"teacher": chunked}, tmp_path / "teacher_checkpoint.pth")
    conversion = convert("dinov2", tmp_path / "teacher_checkpoint.pth", num_heads=HEADS)
    assert conversion.report["unused_tensors"] == {"outside the encoder prefix 'backbone.'": [
        "dino_head.last_layer.weight_v"]}
    x = pixels()
    assert_features("dinov2", ours(conversion.model, x), cls_features(reference, x))


# ------------------------------------------------------------------------------------------- iBOT, MAE, MoCo v3, MSN


def test_ibot_teacher_file_and_full_checkpoint(tmp_path):
    teacher, student = timm_vit(seed=0), timm_vit(seed=1)
    torch.save({"state_dict": teacher.state_dict()}, tmp_path / "checkpoint_teacher.pth")
    model = convert("ibot", tmp_path / "checkpoint_teacher.pth", num_heads=HEADS).model
    x = pixels()
    assert_features("ibot", ours(model, x), cls_features(teacher, x))
    x48 = pixels(48, 48)
    assert_features("ibot", ours(model, x48), cls_features(reference_at(teacher, 48, 48), x48))

    masked_embed = torch.randn(1, DIM)
    full = {
        "student": {**prefixed("module.backbone.", student.state_dict()), "module.backbone.masked_embed": masked_embed,
                    "module.head.last_layer.weight_v": torch.randn(8, 4)},
        "teacher": {**prefixed("backbone.", teacher.state_dict()), "head.last_layer.weight_v": torch.randn(8, 4),
                    "head.last_layer2.weight_v": torch.randn(8, 4)},
        "optimizer": {}, "epoch": 10, "args": argparse.Namespace(arch="vit_small", patch_size=PATCH),
    }
    torch.save(full, tmp_path / "checkpoint.pth")
    conversion = convert("ibot", tmp_path / "checkpoint.pth", num_heads=HEADS)
    assert_features("ibot", ours(conversion.model, x), cls_features(teacher, x))
    assert len(conversion.report["unused_tensors"]["outside the encoder prefix 'backbone.'"]) == 2
    as_student = convert("ibot", tmp_path / "checkpoint.pth", num_heads=HEADS, encoder="student").model
    backbone = backbone_of(as_student)
    assert torch.equal(backbone.embeddings.mask_token, masked_embed)
    assert_features("ibot", ours(as_student, x), cls_features(student, x))


def test_mae_encoder_and_visualize_checkpoint_with_decoder(tmp_path):
    reference = timm_vit()
    torch.save({"model": reference.state_dict()}, tmp_path / "mae_pretrain_vit_base.pth")
    model = convert("mae", tmp_path / "mae_pretrain_vit_base.pth", num_heads=HEADS).model
    x = pixels()
    with torch.no_grad():
        expected = reference.forward_features(x)[:, 1:].mean(dim=1)  # mean of the patch tokens
    assert_features("mae", ours(model, x), expected)

    decoder = {"mask_token": torch.randn(1, 1, 32), "decoder_embed.weight": torch.randn(32, DIM),
               "decoder_pos_embed": torch.randn(1, 17, 32), "decoder_blocks.0.norm1.weight": torch.randn(32),
               "decoder_norm.weight": torch.randn(32), "decoder_pred.weight": torch.randn(192, 32)}
    visualize = {"model": {**reference.state_dict(), **decoder}, "optimizer": {}, "epoch": 799,
                 "scaler": {"scale": 1.0}, "args": argparse.Namespace(model="mae_vit_base_patch16", norm_pix_loss=False)}
    torch.save(visualize, tmp_path / "mae_visualize_vit_base.pth")
    conversion = convert("mae", tmp_path / "mae_visualize_vit_base.pth", num_heads=HEADS)
    unused = conversion.report["unused_tensors"]
    assert sorted(sum(unused.values(), [])) == sorted(decoder)
    assert any("decoder" in reason for reason in unused)
    assert_features("mae", ours(conversion.model, x), expected)


def test_mocov3_base_encoder_and_twelve_heads_for_vit_small(tmp_path):
    """MoCo v3's ViT-S has 12 heads (DINO's 6); the file does not say so, the converter's table does."""
    reference = timm_vit(dim=384, heads=12)
    momentum = timm_vit(dim=384, heads=12, seed=1)
    head = {"head.0.weight": torch.randn(16, 384), "head.1.running_mean": torch.randn(16)}
    checkpoint = {
        "state_dict": {**prefixed("module.base_encoder.", {**reference.state_dict(), **head}),
                       **prefixed("module.momentum_encoder.", momentum.state_dict()),
                       "module.predictor.0.weight": torch.randn(16, 16)},
        "epoch": 300, "optimizer": {}, "scaler": {},
    }
    torch.save(checkpoint, tmp_path / "vit-s-300ep.pth.tar")
    conversion = convert("mocov3", tmp_path / "vit-s-300ep.pth.tar")
    model = conversion.model
    backbone = backbone_of(model)
    assert backbone.config.num_attention_heads == 12 and backbone.config.position_embedding_type == "sincos"
    assert sorted(conversion.report["unused_tensors"]["projection or classification head on top of the encoder"]) \
        == sorted(prefixed("module.base_encoder.", head))
    x = pixels()
    assert_features("mocov3", ours(model, x), cls_features(reference, x))
    momentum_model = convert("mocov3", tmp_path / "vit-s-300ep.pth.tar", encoder="momentum_encoder").model
    assert_features("mocov3", ours(momentum_model, x), cls_features(momentum, x))
    # the same file read as DINO's width-384 ViT would get 6 heads: the head count matters
    assert CONVERTERS["dino"].archs["vit_small"]["num_attention_heads"] == 6


def test_msn_target_encoder_drops_the_projection_head(tmp_path):
    target, online = timm_vit(seed=0), timm_vit(seed=1)
    fc = {"fc.fc1.weight": torch.randn(16, DIM), "fc.bn1.running_var": torch.rand(16), "fc.fc3.weight": torch.randn(8, 16)}
    checkpoint = {
        "target_encoder": prefixed("module.", {**target.state_dict(), **fc}),
        "encoder": prefixed("module.", {**online.state_dict(), **fc}),
        "prototypes": torch.randn(10, 8), "opt": {}, "epoch": 800,
    }
    torch.save(checkpoint, tmp_path / "vits16_800ep.pth.tar")
    conversion = convert("msn", tmp_path / "vits16_800ep.pth.tar", num_heads=HEADS)
    assert sorted(conversion.report["unused_tensors"]["MSN projection head"]) == sorted(prefixed("module.", fc))
    x = pixels()
    assert_features("msn", ours(conversion.model, x), cls_features(target, x))
    # MSN's own evaluation: the last block's CLS token without the final norm
    with torch.no_grad():
        pre_norm = conversion.model(x, output_hidden_states=True).hidden_states[-1][:, 0]
        timm_tokens = target.blocks(target._pos_embed(target.patch_embed(x)))
    assert_features("msn", pre_norm, timm_tokens[:, 0])
    # other sizes: one scalar factor sqrt(npatch / N) (square inputs)
    x48 = pixels(48, 48)
    assert_features("msn", ours(conversion.model, x48),
                    cls_features(reference_at(target, 48, 48, scalar=True), x48))


def test_ijepa_target_encoder_without_cls_token(tmp_path):
    target = timm_vit(seed=0, class_token=False, global_pool="avg", fc_norm=False)
    context = timm_vit(seed=1, class_token=False, global_pool="avg", fc_norm=False)
    checkpoint = {
        "encoder": prefixed("module.", context.state_dict()),
        "predictor": {"module.predictor_embed.weight": torch.randn(32, DIM)},
        "target_encoder": prefixed("module.", target.state_dict()),
        "opt": {}, "scaler": None, "epoch": 300, "loss": 0.1,
    }
    torch.save(checkpoint, tmp_path / "IN1K-vit.h.14-300e.pth.tar")
    model = convert("ijepa", tmp_path / "IN1K-vit.h.14-300e.pth.tar", num_heads=HEADS).model
    backbone = backbone_of(model)
    assert not backbone.config.use_cls_token and backbone.config.pooling == "mean"
    x = pixels()
    with torch.no_grad():
        expected = target.forward_features(x).mean(dim=1)  # mean of all tokens after the final norm
    assert_features("ijepa", ours(model, x), expected)
    context_model = convert("ijepa", tmp_path / "IN1K-vit.h.14-300e.pth.tar", num_heads=HEADS, encoder="encoder").model
    with torch.no_grad():
        assert_features("ijepa", ours(context_model, x), context.forward_features(x).mean(dim=1))


# ------------------------------------------------------------------------------------------- BEiT, data2vec


def timm_beit(seed=0, depth=DEPTH, **kwargs) -> Beit:
    """BEiT's ViT with the original (unilm) key layout: `attn.q_bias`/`attn.v_bias` (no key bias), `gamma_1/2`."""
    torch.manual_seed(seed)
    settings = dict(use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=False, init_values=0.1,
                    global_pool="")
    model = Beit(img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=depth, num_heads=HEADS, num_classes=0,
                 **{**settings, **kwargs}).eval()
    randomize_(model, seed)
    return model


@pytest.mark.parametrize("method, model_type, depth", [("beit", "beit_ssl", DEPTH), ("data2vec", "data2vec_ssl", 6)])
def test_beit_layout_with_absolute_positions(tmp_path, method, model_type, depth):
    reference = timm_beit(depth=depth)  # data2vec's config averages the top 6 blocks: it needs 6
    mask_token = torch.randn(1, 1, DIM)
    lm_head = {"lm_head.weight": torch.randn(16, DIM), "lm_head.bias": torch.randn(16)}
    path = tmp_path / "pretrained.pth"
    torch.save({"model": {**reference.state_dict(), "mask_token": mask_token, **lm_head}, "epoch": 5}, path)
    conversion = convert_to_folder(method, path, tmp_path / "out", num_heads=HEADS)
    assert conversion.report["unused_tensors"] == {next(iter(CONVERTERS[method].ignored.values())): sorted(lm_head)}
    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert model.config.model_type == model_type
    backbone = backbone_of(model)
    assert torch.equal(backbone.embeddings.mask_token, mask_token[0])
    assert torch.equal(backbone.layers[0].attn.qkv.bias[DIM:2 * DIM], torch.zeros(DIM))  # BEiT's key has no bias
    x = pixels()
    with torch.no_grad():
        expected = reference.forward_features(x)
        output = model(x)
    assert_features(method, output.pooler_output, expected[:, 1:].mean(dim=1))
    assert_features(method, output.last_hidden_state, expected)


@pytest.mark.parametrize("settings, message", [
    (dict(use_abs_pos_emb=False, use_shared_rel_pos_bias=True), "relative position bias"),
    (dict(use_rel_pos_bias=True), "relative position bias"),
    (dict(global_pool="avg"), "fc_norm"),
])
def test_beit_that_our_vit_cannot_compute_is_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        convert("beit", {"model": timm_beit(**settings).state_dict()}, num_heads=HEADS)


# -------------------------------------------------------------------------------------------------- ResNet family


def torchvision_resnet(factory=resnet18, seed=0):
    torch.manual_seed(seed)
    model = factory().eval()
    randomize_(model, seed)
    return model


def resnet_layouts(trunk: dict, other: dict):
    """method -> (file name, checkpoint) with `trunk` (a torchvision state dict with fc) in the method's layout."""
    no_fc = {k: v for k, v in trunk.items() if not k.startswith("fc.")}
    mlp = {"fc.0.weight": torch.randn(16, 512), "fc.0.bias": torch.randn(16), "fc.2.weight": torch.randn(8, 16)}
    return {
        "moco": ("moco_v2_800ep_pretrain.pth.tar", {
            "state_dict": {**prefixed("module.encoder_q.", {**no_fc, **mlp}), **prefixed("module.encoder_k.", other),
                           "module.queue": torch.randn(8, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)},
            "arch": "resnet18", "epoch": 800, "optimizer": {}}),
        "simsiam": ("checkpoint_0099.pth.tar", {
            "state_dict": {**prefixed("module.encoder.", {**no_fc, **mlp}),
                           "module.predictor.0.weight": torch.randn(4, 8)},
            "arch": "resnet18", "epoch": 100, "optimizer": {}}),
        "swav": ("swav_800ep_pretrain.pth.tar", prefixed("module.", {
            **no_fc, "projection_head.0.weight": torch.randn(16, 512), "prototypes.weight": torch.randn(30, 8)})),
        "barlowtwins": ("resnet50.pth", no_fc),
        "vicreg": ("resnet50.pth", no_fc),
        "byol": ("pretrain_res50x1.pth", trunk),
        "simclr": ("resnet50-1x.pth", {"state_dict": trunk}),
        "dino": ("dino_resnet50_pretrain.pth", no_fc),
    }


@pytest.fixture(scope="module")
def resnet18_reference():
    """A randomised torchvision ResNet-18's state dict (with fc), its pooled features on `pixels(64, 64)`, and a
    second encoder's weights (MoCo's key encoder)."""
    reference = torchvision_resnet()
    state = reference.state_dict()
    reference.fc = nn.Identity()
    with torch.no_grad():
        features = reference(pixels(64, 64))
    other = {key: value + 1 if value.is_floating_point() else value for key, value in state.items()}
    return state, features, other


@pytest.mark.parametrize("method", ["moco", "simsiam", "swav", "barlowtwins", "vicreg", "byol", "simclr", "dino"])
def test_resnet_family(method, tmp_path, resnet18_reference):
    state, features, other = resnet18_reference
    name, checkpoint = resnet_layouts(state, other)[method]
    torch.save(checkpoint, tmp_path / name)
    conversion = convert(method, tmp_path / name)
    model = conversion.model
    backbone = backbone_of(model)
    assert isinstance(backbone, SSLResNetModel) and backbone.config.depth == 18
    assert_features(method, ours(model, pixels(64, 64)), features)
    assert conversion.report["created_tensors"] == []
    if method == "moco":
        key_encoder = backbone_of(convert(method, tmp_path / name, encoder="encoder_k").model)
        assert torch.equal(key_encoder.conv1.weight, other["conv1.weight"])


def test_dino_resnet50_plain(tmp_path):
    reference = torchvision_resnet(resnet50)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "dino_resnet50_pretrain.pth")
    model = convert("dino", tmp_path / "dino_resnet50_pretrain.pth").model
    assert type(model) is DinoModel and model.backbone.config.depth == 50
    reference.fc = nn.Identity()
    x = pixels(64, 64)
    with torch.no_grad():
        assert_features("dino", ours(model, x), reference(x))


# ------------------------------------------------------------------------------------------------------ bad input


def test_every_method_has_a_converter_with_a_default_encoder():
    expected = {"dino", "dinov2", "ibot", "mae", "mocov3", "msn", "ijepa", "beit", "data2vec", "moco", "simsiam",
                "swav", "barlowtwins", "vicreg", "byol", "simclr"}
    assert set(CONVERTERS) == expected
    assert all(converter.encoders and converter.files for converter in CONVERTERS.values())


def run_cli_expecting_error(tmp_path, capsys, method, checkpoint, *extra):
    out = tmp_path / "out"
    code = main(["convert", method, "--checkpoint", str(checkpoint), "--out", str(out), "--num-heads", str(HEADS),
                 *extra])
    assert code == 2
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging folder left behind
    return capsys.readouterr().err


def test_wrong_method_names_the_prefixes_found_and_the_likely_method(tmp_path, capsys):
    reference = timm_vit(dim=384, heads=12)
    torch.save({"state_dict": prefixed("module.base_encoder.", reference.state_dict()), "epoch": 1},
               tmp_path / "vit-s-300ep.pth.tar")
    error = run_cli_expecting_error(tmp_path, capsys, "dino", tmp_path / "vit-s-300ep.pth.tar")
    assert "not a dino checkpoint" in error and "'module.base_encoder.'" in error and "mocov3" in error


def test_unexpected_prefix_is_refused(tmp_path, capsys):
    torch.save({"teacher": prefixed("encoder.", timm_vit().state_dict())}, tmp_path / "checkpoint.pth")
    error = run_cli_expecting_error(tmp_path, capsys, "dino", tmp_path / "checkpoint.pth")
    assert "prefix 'encoder.'" in error and "['teacher']" in error


def test_unmapped_encoder_key_is_an_error_not_a_silent_drop(tmp_path, capsys):
    state = {**timm_vit().state_dict(), "blocks.0.attn.rel_pos_h": torch.randn(7, 16)}
    torch.save(state, tmp_path / "dino.pth")
    error = run_cli_expecting_error(tmp_path, capsys, "dino", tmp_path / "dino.pth")
    assert "blocks.0.attn.rel_pos_h" in error and "refusing to drop" in error


def test_truncated_file(tmp_path, capsys):
    path = tmp_path / "dino.pth"
    torch.save(timm_vit().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    error = run_cli_expecting_error(tmp_path, capsys, "dino", path)
    assert "truncated or corrupt" in error


class Exploit:
    """A pickle that would create a file when unpickled with weights_only=False."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickle_that_needs_code_execution_is_refused(tmp_path, capsys):
    target = str(tmp_path / "pwned")
    torch.save({"state_dict": timm_vit().state_dict(), "payload": Exploit(target)}, tmp_path / "evil.pth")
    error = run_cli_expecting_error(tmp_path, capsys, "dino", tmp_path / "evil.pth")
    assert "code execution" in error and "posix.mkdir" in error
    assert not os.path.exists(target)


def test_existing_output_folder_is_kept_unless_overwrite(tmp_path):
    torch.save(timm_vit().state_dict(), tmp_path / "dino.pth")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        convert_to_folder("dino", tmp_path / "dino.pth", out, num_heads=HEADS)
    assert (out / "keep.txt").read_text() == "mine"
    convert_to_folder("dino", tmp_path / "dino.pth", out, overwrite=True, num_heads=HEADS)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_heads_needed_for_unknown_width_and_arch_checks(tmp_path):
    state = timm_vit().state_dict()
    with pytest.raises(ValueError, match="--num-heads"):
        convert("dino", state)
    with pytest.raises(ValueError, match="--arch vit_small has width 384"):
        convert("dino", state, arch="vit_small")
    with pytest.raises(ValueError, match="patch embedding"):
        convert("dino", state, num_heads=HEADS, patch_size=16)
