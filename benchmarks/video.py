"""Video input for Qwen3.5 students, judges and teachers: frames sampled from the file with PyAV, cached as
PNG files (a clip is a folder of frames and its frames.json, so examples, records and buffers hold paths,
never pixels), and turned into the model's video inputs; and where a video benchmark's row finds its file
(a local path, --video-dir, a file of the hub set) and its subtitles.

The paper gives no frame sampling; ours [flags --video-fps, --video-max-frames]: FPS frames per second of the
video, uniformly spaced, at most MAX_FRAMES (fewer frames over the whole clip when it is long), an even count
(Qwen's temporal patch is two frames), each frame sized by the student's image processor within its pixel
bounds. Engines: the transformers engine gets pixel_values_videos / video_grid_thw built here (Qwen3-VL's
video layout: pairs of frames per temporal patch, a "<t seconds>" text before each pair's tokens, as its
processor writes them), vLLM gets `multi_modal_data={"video": [(frames, metadata)]}` of the same sampled
frames, and an OpenAI-compatible server gets the video file itself as a `video_url` content part (a base64
data URL), which it samples itself.
"""
import hashlib
import json
import os

import numpy as np

DEFAULT_FPS, DEFAULT_MAX_FRAMES = 2.0, 32
VIDEO_TOKEN, VISION_START, VISION_END = "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"


class VideoError(ValueError):
    """A video file that cannot be read or decoded (its row is skipped and counted)."""


def cache_root():
    return os.path.join(os.path.expanduser("~"), ".cache", "zppo", "frames")


def sample_frames(path, fps=DEFAULT_FPS, max_frames=DEFAULT_MAX_FRAMES, cache=None):
    """The clip's frames.json (frames, times, indices, native fps, source), decoded once and cached by the
    file's path, size, mtime and the sampling settings."""
    import av

    if not os.path.exists(path):
        raise VideoError(f"video file not found: {path}")
    stat = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{fps}|"
                       f"{max_frames}".encode())
    folder = os.path.join(cache or cache_root(), key.hexdigest()[:20])
    index = os.path.join(folder, "frames.json")
    if os.path.exists(index):
        return index
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0) or 24.0
            frames = [(f.time if f.time is not None else i / rate, f.to_image()) for i, f in
                      enumerate(container.decode(stream))]
    except (av.error.FFmpegError, IndexError, OSError, ValueError) as e:
        raise VideoError(f"video file undecodable: {path} ({type(e).__name__}: {str(e)[:120]})") from None
    if not frames:
        raise VideoError(f"video file has no frames: {path}")
    duration = frames[-1][0] + 1.0 / rate
    count = min(max_frames, max(2, round(duration * fps)), len(frames))
    count -= count % 2 if count > 1 else 0
    # int(): a plain int for frames.json whatever round() gives for numpy's floats
    picks = sorted({int(round(x)) for x in np.linspace(0, len(frames) - 1, max(count, 1))})  # noqa: RUF046
    os.makedirs(folder, exist_ok=True)
    names = []
    for k, i in enumerate(picks):
        names.append(f"frame_{k:04d}.png")
        frames[i][1].convert("RGB").save(os.path.join(folder, names[-1]))
    meta = {"frames": names, "indices": picks, "times": [frames[i][0] for i in picks], "fps": rate,
            "total_frames": len(frames), "duration": duration, "source": os.path.abspath(path)}
    from checkpoint import atomic_write

    atomic_write(index, json.dumps(meta))  # frames.json last, whole: a cut decode leaves no clip to find
    return index


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


# ---------------------------------------------------------------------------------------------------------
# a benchmark row's video: its file found, its frames sampled and cached, Video-MME's subtitles


def _after(text, marker):
    return text.split(marker, 1)[1] if marker in text else None


_VIDEO_INDEX = {}


def video_dir_index(folder):
    """basename -> path of every file under --video-dir (Video-MME, VideoMMMU and MVBench ship their videos in
    archives: unpack them there), built once per folder."""
    if folder not in _VIDEO_INDEX:
        if not os.path.isdir(folder):
            raise ValueError(f"--video-dir {folder}: no such folder")
        _VIDEO_INDEX[folder] = {}
        for root, _, files in os.walk(folder):
            for f in files:
                _VIDEO_INDEX[folder].setdefault(f, os.path.join(root, f))
    return _VIDEO_INDEX[folder]


def resolve_video(name, spec, where, base, cfg):
    """A local file for a row's video: relative to a local benchmark file, under --video-dir (by the path,
    then by its file name), or a file of the hub set (a resolve/ URL or a path in the set's repository,
    downloaded once by huggingface_hub)."""
    name = str(name)
    if base and os.path.exists(os.path.join(base, name)):
        return os.path.join(base, name)
    if cfg.get("dir"):
        direct = os.path.join(cfg["dir"], name)
        if os.path.exists(direct):
            return direct
        found = video_dir_index(cfg["dir"]).get(os.path.basename(name))
        if found:
            return found
    repo_path = _after(name, f"/datasets/{spec['hub']}/resolve/")
    if repo_path is not None or (not base and spec.get("video_in_repo")):
        from huggingface_hub import hf_hub_download

        revision, _, path = repo_path.partition("/") if repo_path is not None else ("main", "", name)
        try:
            return hf_hub_download(spec["hub"], path, repo_type="dataset", revision=revision)
        except Exception as e:  # noqa: BLE001 (whatever the hub raises: the video is not downloadable)
            raise VideoError(f"{where}: video {path} of {spec['hub']} not downloadable "
                             f"({type(e).__name__})") from None
    raise VideoError(f"{where}: video {name!r} not found"
                     + (f" under --video-dir {cfg['dir']}" if cfg.get("dir")
                        else " (pass --video-dir: the set ships its videos in archives)"))


def srt_lines(path):
    """(start s, end s, text) of each cue of an .srt file."""
    def seconds(stamp):
        h, m, s = stamp.strip().replace(",", ".").split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    cues = []
    with open(path, encoding="utf-8", errors="replace") as f:
        blocks = f.read().replace("\r", "").strip().split("\n\n")
    for block in blocks:
        lines = block.split("\n")
        for k, line in enumerate(lines):
            if "-->" in line:
                start, end = line.split("-->")
                text = " ".join(x.strip() for x in lines[k + 1:] if x.strip())
                cues.append((seconds(start), seconds(end.split()[0]), text))
                break
    return cues


def subtitles_at(path, times):
    """Video-MME with subtitles: the cues shown at the sampled frames' times, in order, once each (lmms-eval's
    per-frame subtitle selection); "No subtitles available" when the video has none."""
    if not path or not os.path.exists(path):
        return "No subtitles available"
    picked = [text for start, end, text in srt_lines(path) if any(start <= t <= end for t in times)]
    return "\n".join(dict.fromkeys(picked)) or "No subtitles available"


def attach_video(got, spec, where, base, cfg):
    """The converter's fields with the clip sampled: `videos` [frames.json]; Video-MME's subtitles before the
    question when the benchmark asks for them."""
    got = dict(got)
    path = resolve_video(got.pop("video_file"), spec, where, base, cfg)
    index = sample_frames(path, cfg.get("fps") or DEFAULT_FPS, cfg.get("max_frames") or DEFAULT_MAX_FRAMES,
                          cfg.get("cache"))
    got["videos"] = [index]
    subtitle = got.pop("subtitle_file", None)
    if subtitle is not None:
        _, meta = load_clip(index)
        folder = cfg.get("dir") or base
        srt = os.path.join(folder, "subtitle", subtitle) if folder else None
        got["question"] = f"This video's subtitles are listed below: \n{subtitles_at(srt, meta['times'])}\n" \
                          f"{got['question']}"
    return got
