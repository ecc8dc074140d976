"""A video clip as the engines take it: a sampled clip is a folder of PNG frames and its frames.json
(benchmarks/video.py samples and caches them from the file), so prompts, records and buffers hold paths, never
pixels. The transformers engine gets pixel_values_videos / video_grid_thw built here (Qwen3-VL's video
layout: pairs of frames per temporal patch, a "<t seconds>" text before each pair's tokens, as its processor
writes them), vLLM gets `multi_modal_data={"video": [(frames, metadata)]}` of the same sampled frames, and an
OpenAI-compatible server gets the video file itself as a `video_url` content part (a base64 data URL), which
it samples itself. Only evaluation's video benchmarks put videos in a prompt.
"""
import json
import os

import numpy as np

VIDEO_TOKEN, VISION_START, VISION_END = "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"


def load_clip(index):
    """(RGB frames, metadata) of a cached clip."""
    from PIL import Image

    with open(index) as f:
        meta = json.load(f)
    folder = os.path.dirname(index)
    frames = []
    for name in meta["frames"]:
        with Image.open(os.path.join(folder, name)) as im:
            frames.append(im.convert("RGB"))
    return frames, meta


def prompt_videos(prompt):
    """The clips (frames.json paths) of a prompt; none for a text or a chat."""
    return list(prompt.get("videos") or []) if isinstance(prompt, dict) else []


def group_times(meta, temporal=2):
    """One timestamp per temporal patch: the mean of its first and last frame's index / fps, as Qwen3-VL's
    processor computes them (the last frame repeated to fill a patch)."""
    idx = list(meta["indices"])
    idx += [idx[-1]] * (-len(idx) % temporal)
    t = [i / meta["fps"] for i in idx]
    return [(t[i] + t[i + temporal - 1]) / 2 for i in range(0, len(t), temporal)]


def video_inputs(tokenizer, clips):
    """pixel_values_videos (patches, dim) and video_grid_thw (videos, 3) in Qwen3-VL's video layout, built
    from the image processor's patches of each frame: a temporal patch holds two consecutive frames."""
    import torch

    processor = getattr(tokenizer, "image_processor", None)
    if processor is None:
        raise ValueError(f"a prompt with a video ({clips[0]}) for a model without an image processor: load a "
                         "vision-language checkpoint without --text-only")
    temporal = processor.temporal_patch_size
    pixels, grids = [], []
    for index in clips:
        frames, _ = load_clip(index)
        frames += [frames[-1]] * (-len(frames) % temporal)  # pad to whole temporal patches, as upstream
        out = processor(images=frames, return_tensors="pt")
        per_frame = out["pixel_values"].shape[0] // len(frames)
        thw = out["image_grid_thw"][0].tolist()
        dim = out["pixel_values"].shape[1]
        # (frames, patches, C, temporal, p, p): each frame's patch holds its pixels repeated over `temporal`
        p = out["pixel_values"].reshape(len(frames), per_frame, 3, temporal, -1)
        groups = []
        for g in range(len(frames) // temporal):
            patch = p[g * temporal].clone()
            for j in range(1, temporal):
                patch[:, :, j] = p[g * temporal + j][:, :, j]
            groups.append(patch.reshape(per_frame, dim))
        pixels.append(torch.cat(groups))
        grids.append([len(frames) // temporal, thw[1], thw[2]])
    return {"pixel_values_videos": torch.cat(pixels), "video_grid_thw": torch.tensor(grids)}


def expand_video_tokens(tokenizer, ids, vision, clips):
    """Each video's <|vision_start|><|video_pad|><|vision_end|> becomes, per temporal patch, "<t seconds>"
    then its own start, one pad per merged patch, and end (Qwen3-VL's processor's replace_video_token)."""
    start, pad, end = (tokenizer.convert_tokens_to_ids(t) for t in (VISION_START, VIDEO_TOKEN, VISION_END))
    merge = tokenizer.image_processor.merge_size ** 2
    out, k, i = [], 0, 0
    while i < len(ids):
        if ids[i:i + 3] == [start, pad, end] and k < len(clips):
            _, meta = load_clip(clips[k])
            t, h, w = vision["video_grid_thw"][k].tolist()
            for when in group_times(meta, tokenizer.image_processor.temporal_patch_size)[:t]:
                out += tokenizer.encode(f"<{when:.1f} seconds>", add_special_tokens=False)
                out += [start] + [pad] * (h * w // merge) + [end]
            k, i = k + 1, i + 3
        else:
            out.append(ids[i])
            i += 1
    if k != len(clips):
        raise ValueError(f"the chat template placed {k} video(s) for {len(clips)} in the prompt")
    return out


def vllm_video(index):
    """vLLM's video item for Qwen3-VL: the sampled frames (T, H, W, 3) and their metadata, not re-sampled."""
    frames, meta = load_clip(index)
    array = np.stack([np.asarray(f) for f in frames])
    return array, {"fps": meta["fps"], "frames_indices": meta["indices"],
                   "total_num_frames": meta["total_frames"], "duration": meta["duration"],
                   "video_backend": "pyav", "do_sample_frames": False}


def video_data_url(index):
    """The clip's source file as a base64 data URL, for a server's `video_url` content part."""
    import base64

    with open(index) as f:
        source = json.load(f)["source"]
    with open(source, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    kind = os.path.splitext(source)[1].lstrip(".").lower() or "mp4"
    return f"data:video/{kind};base64,{data}"
