"""A stand-in for a SoulX-FlashTalk checkout, for testing ``engine.bench.reference`` without the real one.

It has the released layout and the interfaces the adapter relies on (module names, constructor and function
signatures, ``generate``'s per-stage prints, ``inference.py`` reading its yaml relative to the working
directory), with trivial bodies written for these tests, running on the CPU. Its weight loaders raise, so a
test fails unless the adapter replaced every one of them by a random-weight builder.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

FILES: dict[str, str] = {
    "flash_talk/__init__.py": "",
    "flash_talk/configs/infer_params.yaml": """
        frame_num: 33
        motion_frames_num: 5
        tgt_fps: 25
        sample_rate: 16000
        sample_steps: 4
        sample_shift: 5
        color_correction_strength: 1.0
        cached_audio_duration: 8
        height: 768
        width: 448
    """,
    "flash_talk/src/__init__.py": "",
    "flash_talk/src/distributed/__init__.py": "",
    "flash_talk/src/distributed/usp_device.py": """
        import math

        def get_parallel_degree(world_size, num_heads):
            u = math.gcd(world_size, num_heads)
            return u, world_size // u

        def get_device(ulysses_degree, ring_degree):
            return "cpu"
    """,
    "flash_talk/infinite_talk/__init__.py": "",
    "flash_talk/infinite_talk/configs/__init__.py": """
        import torch

        class AttrDict(dict):
            __getattr__ = dict.__getitem__
            __setattr__ = dict.__setitem__

        multitalk_14B = AttrDict(param_dtype=torch.bfloat16, vae_stride=(4, 8, 8), patch_size=(1, 2, 2),
                                 text_len=512, num_heads=40, sample_neg_prompt="")
    """,
    "flash_talk/infinite_talk/modules/__init__.py": "",
    "flash_talk/infinite_talk/modules/multitalk_model.py": """
        import torch
        from torch import nn

        CONSTRUCTED = []

        class WanModel(nn.Module):
            def __init__(self, model_type='i2v', patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=2048,
                         ffn_dim=8192, freq_dim=256, text_dim=4096, out_dim=16, num_heads=16, num_layers=32,
                         window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6, audio_window=5,
                         intermediate_dim=512, output_dim=768, context_tokens=32, vae_scale=4,
                         norm_input_visual=True, norm_output_audio=True, weight_init=True):
                super().__init__()
                CONSTRUCTED.append(dict(dim=dim, num_layers=num_layers, in_dim=in_dim))
                self.proj = nn.Linear(out_dim, out_dim)

            @classmethod
            def from_pretrained(cls, *args, **kwargs):
                raise RuntimeError("fake release: WanModel.from_pretrained needs weights")

            def forward(self, x, t, context, clip_fea, seq_len, y, audio, ref_target_masks=None):
                return [self.proj(x[0].float().movedim(0, -1)).movedim(-1, 0)]
    """,
    "flash_talk/infinite_talk/audio_analysis/__init__.py": "",
    "flash_talk/infinite_talk/audio_analysis/wav2vec2.py": """
        import torch.nn.functional as F
        from transformers import Wav2Vec2Model as HFWav2Vec2Model
        from transformers.modeling_outputs import BaseModelOutput

        class Wav2Vec2Model(HFWav2Vec2Model):
            @classmethod
            def from_pretrained(cls, *args, **kwargs):
                raise RuntimeError("fake release: Wav2Vec2Model.from_pretrained needs weights")

            def forward(self, input_values, seq_len, output_hidden_states=True, **kwargs):
                out = super().forward(input_values, output_hidden_states=True)
                states = tuple(F.interpolate(h.transpose(1, 2), size=seq_len, mode="linear").transpose(1, 2)
                               for h in out.hidden_states)
                return BaseModelOutput(last_hidden_state=states[-1], hidden_states=states)
    """,
    "flash_talk/infinite_talk/utils/__init__.py": "",
    "flash_talk/infinite_talk/utils/multitalk_utils.py": """
        def loudness_norm(audio, sr):
            return audio
    """,
    "flash_talk/wan/__init__.py": "",
    "flash_talk/wan/modules/__init__.py": """
        from .vae import WanVAE

        def T5EncoderModel(*args, **kwargs):
            raise RuntimeError("fake release: T5EncoderModel needs weights")

        def CLIPModel(*args, **kwargs):
            raise RuntimeError("fake release: CLIPModel needs weights")
    """,
    "flash_talk/wan/modules/vae.py": """
        import torch
        import torch.nn.functional as F
        from torch import nn

        class WanVAE_(nn.Module):
            def __init__(self, dim, z_dim, dim_mult, num_res_blocks, attn_scales, temperal_downsample, dropout):
                super().__init__()
                self.enc = nn.Conv3d(3, z_dim, 1)
                self.dec = nn.Conv3d(z_dim, 3, 1)

            def encode(self, x, scale):
                t = 1 + (x.shape[2] - 1) // 4
                return self.enc(F.adaptive_avg_pool3d(x, (t, x.shape[3] // 8, x.shape[4] // 8)))

            def decode(self, z, scale):
                size = (1 + 4 * (z.shape[2] - 1), z.shape[3] * 8, z.shape[4] * 8)
                return F.interpolate(self.dec(z), size=size)

        def _video_vae(pretrained_path=None, z_dim=None, dtype=torch.float, **kwargs):
            raise RuntimeError("fake release: the VAE needs " + str(pretrained_path))

        class WanVAE:
            def __init__(self, z_dim=16, vae_path="x.pth", dtype=torch.float, device="cuda", parallel=False):
                self.scale = None
                self.model = _video_vae(pretrained_path=vae_path, z_dim=z_dim, dtype=dtype).eval().to(device).to(dtype)

            def encode(self, video):
                return self.model.encode(video, self.scale).squeeze(0)

            def decode(self, zs):
                return self.model.decode(zs.unsqueeze(0), self.scale).clamp_(-1, 1)
    """,
    "flash_talk/src/pipeline/__init__.py": "",
    "flash_talk/src/pipeline/flash_talk_pipeline.py": """
        import time

        import numpy as np
        import torch
        from transformers import Wav2Vec2FeatureExtractor

        from flash_talk.wan.modules import CLIPModel, T5EncoderModel, WanVAE
        from flash_talk.infinite_talk.modules.multitalk_model import WanModel
        from flash_talk.infinite_talk.audio_analysis.wav2vec2 import Wav2Vec2Model

        COMPILE_MODEL = False
        COMPILE_VAE = False
        USE_PARALLEL_VAE = True

        class FlashTalkPipeline:
            def __init__(self, config, checkpoint_dir, wav2vec_dir, device="cuda", use_usp=False, cpu_offload=False):
                self.device = device
                self.param_dtype = config.param_dtype
                self.vae_stride = config.vae_stride
                self.text_encoder = T5EncoderModel(text_len=config.text_len, dtype=self.param_dtype, device=device,
                                                   checkpoint_path="t5.pth", tokenizer_path="t5")
                self.vae = WanVAE(vae_path=checkpoint_dir + "/vae.pth", dtype=self.param_dtype, device=device)
                self.clip = CLIPModel(dtype=self.param_dtype, device=device, checkpoint_path="c.pth", tokenizer_path="c")
                self.model = WanModel.from_pretrained(checkpoint_dir, device_map=device, torch_dtype=self.param_dtype)
                self.audio_encoder = Wav2Vec2Model.from_pretrained(wav2vec_dir, local_files_only=True).to(device)
                self.wav2vec_feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(wav2vec_dir)

            def prepare_params(self, input_prompt, cond_image, target_size, frame_num, motion_frames_num,
                               sampling_steps, seed=None, shift=5.0, color_correction_strength=0.0):
                self.frame_num, self.motion_frames_num, self.steps = frame_num, motion_frames_num, sampling_steps
                image = torch.from_numpy(np.array(cond_image)).permute(2, 0, 1)[None, :, None]
                assert tuple(image.shape[-2:]) == tuple(target_size), (image.shape, target_size)
                self.cond = (image.to(self.param_dtype) / 255 - 0.5) * 2
                self.context = self.text_encoder([input_prompt], self.device)[0]
                self.clip_fea = self.clip.visual(self.cond)
                self.latent_motion_frames = self.vae.encode(self.cond)
                self.generator = torch.Generator(self.device).manual_seed(seed)

            def preprocess_audio(self, speech_array, sr=16000, fps=25):
                values = self.wav2vec_feature_extractor(speech_array, sampling_rate=sr).input_values
                x = torch.from_numpy(np.squeeze(values)).float()[None]
                out = self.audio_encoder(x, seq_len=int(len(speech_array) * fps / sr), output_hidden_states=True)
                return torch.stack(out.hidden_states[1:], dim=1).squeeze(0).transpose(0, 1)

            def generate(self, audio_embedding):
                h, w = self.cond.shape[-2:]
                latent = torch.randn(16, (self.frame_num - 1) // 4 + 1, h // 8, w // 8, dtype=self.param_dtype,
                                     generator=self.generator)
                for i in range(self.steps):
                    start = time.time()
                    v = self.model([latent], t=1000.0, context=[self.context], clip_fea=self.clip_fea, seq_len=0,
                                   y=None, audio=audio_embedding)[0]
                    print(f"[generate] model denoise per step: {time.time() - start}s")
                    latent = (latent - 0.1 * v).to(self.param_dtype)
                start = time.time()
                videos = self.vae.decode(latent)
                print(f"[generate] decode video frames: {time.time() - start}s")
                print(f"[generate] color correction: {0.0}s")
                start = time.time()
                self.latent_motion_frames = self.vae.encode(videos[:, :, -self.motion_frames_num:])
                print(f"[generate] encode motion frames: {time.time() - start}s")
                return videos[:, :, self.motion_frames_num:][0].to(torch.float32)
    """,
    "flash_talk/inference.py": """
        import torch
        import yaml

        from flash_talk.src.pipeline.flash_talk_pipeline import FlashTalkPipeline
        from flash_talk.src.distributed.usp_device import get_device, get_parallel_degree
        from flash_talk.infinite_talk.configs import multitalk_14B
        from flash_talk.infinite_talk.utils.multitalk_utils import loudness_norm

        with open("flash_talk/configs/infer_params.yaml", "r") as f:
            infer_params = yaml.safe_load(f)

        target_size = (infer_params['height'], infer_params['width'])

        def get_pipeline(world_size, ckpt_dir, wav2vec_dir, cpu_offload=False):
            u, r = get_parallel_degree(world_size, multitalk_14B.num_heads)
            return FlashTalkPipeline(config=multitalk_14B, checkpoint_dir=ckpt_dir, wav2vec_dir=wav2vec_dir,
                                     device=get_device(u, r), use_usp=world_size > 1, cpu_offload=cpu_offload)

        def get_base_data(pipeline, input_prompt, cond_image, base_seed):
            pipeline.prepare_params(input_prompt=input_prompt, cond_image=cond_image, target_size=target_size,
                                    frame_num=infer_params['frame_num'],
                                    motion_frames_num=infer_params['motion_frames_num'],
                                    sampling_steps=infer_params['sample_steps'], seed=base_seed)

        def get_audio_embedding(pipeline, audio_array, audio_start_idx=-1, audio_end_idx=-1):
            emb = pipeline.preprocess_audio(loudness_norm(audio_array, 16000))
            idx = torch.arange(audio_start_idx, audio_end_idx)[:, None] + (torch.arange(5) - 2)[None]
            return emb[idx.clamp(0, audio_end_idx - 1)][None]

        def run_pipeline(pipeline, audio_embedding):
            sample = pipeline.generate(audio_embedding)
            return (((sample + 1) / 2).permute(1, 2, 3, 0).clip(0, 1) * 255).contiguous()
    """,
}


def write_fake_release(root: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """Write the fake checkout under ``root`` (leaving out the files in ``skip``); returns ``root``."""
    for rel, text in FILES.items():
        if rel in skip:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root
