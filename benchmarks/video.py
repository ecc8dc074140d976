"""Video input for Qwen3.5 students, judges and teachers: frames sampled from the file with PyAV, cached as
PNG files (a clip is a folder of frames and its frames.json, so examples, records and buffers hold paths,
never pixels), and turned into the model's video inputs; and where a video benchmark's row finds its file
(a local path, --video-dir, a file of the hub set) and its subtitles.

The paper gives no frame sampling; ours [flags --video-fps, --video-max-frames]: FPS frames per second of the
video, uniformly spaced, at most MAX_FRAMES (fewer frames over the whole clip when it is long), an even count
(Qwen's temporal patch is two frames), each frame sized by the student's image processor within its pixel
bounds. The engines' side of a clip (the model's video inputs, vLLM's, a server's) is engines/video.py.
"""
import bisect
import hashlib
import json
import os

import numpy as np

from engines.video import load_clip

DEFAULT_FPS, DEFAULT_MAX_FRAMES = 2.0, 32


class VideoError(ValueError):
    """A video file that cannot be read or decoded (its row is skipped and counted)."""


def cache_root():
    return os.path.join(os.path.expanduser("~"), ".cache", "zppo", "frames")


def sample_frames(path, fps=DEFAULT_FPS, max_frames=DEFAULT_MAX_FRAMES, cache=None):
    """The clip's frames.json (frames, times, indices, native fps, source), decoded once and cached by the
    file's path, size, mtime and the sampling settings. Only the sampled frames are kept (memory set by
    max_frames, not by the clip's length), and they are reached by seeking: the stream's packets are read
    without decoding (how many frames, their times), then each sampled frame is decoded from the keyframe
    before it. Where the packets do not tell every frame's time or a seek lands elsewhere, the stream is
    decoded in one pass keeping only the frames the packets say are sampled (a second pass only when the
    decoded frames disagree with the packets). Either way the frames are those that decoding every frame and
    taking evenly spaced ones gives."""
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
            pts, keys = _packets(container, stream)
            base, clip = stream.time_base, None
            try:
                clip = _by_seeking(container, stream, rate, fps, max_frames, pts, keys)
            except av.error.FFmpegError:  # a container that cannot seek: decoded whole instead
                pass
        if clip is None:  # every frame's time as the packets say, where they say it
            guess = ([float(p) * base.numerator / base.denominator for p in sorted(pts)]
                     if base and None not in pts else [i / rate for i in range(len(pts))]
                     if set(pts) == {None} else [])
            clip = _in_one_pass(av, path, rate, fps, max_frames, guess)
    except (av.error.FFmpegError, IndexError, OSError, ValueError) as e:
        raise VideoError(f"video file undecodable: {path} ({type(e).__name__}: {str(e)[:120]})") from None
    if clip is None:
        raise VideoError(f"video file has no frames: {path}")
    picks, times, images, total, duration = clip
    os.makedirs(folder, exist_ok=True)
    names = []
    for k, image in enumerate(images):
        names.append(f"frame_{k:04d}.png")
        image.convert("RGB").save(os.path.join(folder, names[-1]))
    meta = {"frames": names, "indices": picks, "times": times, "fps": rate, "total_frames": total,
            "duration": duration, "source": os.path.abspath(path)}
    from checkpoint import atomic_write

    atomic_write(index, json.dumps(meta))  # frames.json last, whole: a cut decode leaves no clip to find
    return index


def _picks(times, rate, fps, max_frames):
    """(indices of the sampled frames, the clip's duration) from every frame's time: at most max_frames (an
    even count) evenly spaced from the first frame to the last, FPS per second of the clip."""
    duration = times[-1] + 1.0 / rate
    count = min(max_frames, max(2, round(duration * fps)), len(times))
    count -= count % 2 if count > 1 else 0
    # int(): a plain int for frames.json whatever round() gives for numpy's floats
    picks = sorted({int(round(x)) for x in np.linspace(0, len(times) - 1, max(count, 1))})  # noqa: RUF046
    return picks, duration


def _packets(container, stream):
    """(every frame's pts, the keyframes' pts) as the stream's packets say, read without decoding; a pts
    is None where its packet has none or decoding drops the packet (discarded, corrupt)."""
    pts, keys = [], []
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's end-of-stream marker, no frame
            continue
        pts.append(None if packet.is_discard or packet.is_corrupt else packet.pts)
        if packet.is_keyframe and pts[-1] is not None:
            keys.append(pts[-1])
    return pts, sorted(keys)


def _by_seeking(container, stream, rate, fps, max_frames, pts, keys):
    """(picks, times, images, frame count, duration) with only the sampled frames decoded, each from the
    keyframe at or before it; None where the packets do not give every frame a time of its own or a seek
    lands elsewhere than asked."""
    pts, base = sorted(pts) if pts and None not in pts else [], stream.time_base
    if not pts or not keys or not base or len(set(pts)) < len(pts) or keys[0] > pts[0]:
        return None
    times = [float(p) * base.numerator / base.denominator for p in pts]  # as av.Frame.time computes it
    picks, duration = _picks(times, rate, fps, max_frames)
    images, frames, last = [], None, None
    for i in picks:
        key = keys[bisect.bisect_right(keys, pts[i]) - 1]  # the last keyframe at or before it
        if frames is None or key > last:  # its keyframe is ahead of what was decoded: jump there
            container.seek(key, stream=stream, backward=True)
            frames = container.decode(stream)
        for frame in frames:
            last = frame.pts
            if frame.pts is None or frame.pts > pts[i]:
                return None  # past it: this container's seeking is not exact
            if frame.pts == pts[i]:
                if frame.time != times[i]:
                    return None
                images.append(frame.to_image())
                break
        else:
            return None
    return picks, [times[i] for i in picks], images, len(pts), duration


def _in_one_pass(av, path, rate, fps, max_frames, guess):
    """(picks, times, images, frame count, duration) by decoding the whole stream once, keeping only the
    frames sampled from `guess` (every frame's time as the packets say); when the decoded frames sample
    otherwise, a second pass keeps those. None for a stream without frames."""
    picks = _picks(guess, rate, fps, max_frames)[0] if guess else []
    wanted, times, kept = set(picks), [], {}
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            times.append(frame.time if frame.time is not None else i / rate)
            if i in wanted:
                kept[i] = frame.to_image()
    if not times:
        return None
    sampled, duration = _picks(times, rate, fps, max_frames)
    if sampled != picks:  # the packets did not tell the frames as decoding gives them
        wanted, kept = set(sampled), {}
        with av.open(path) as container:
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                if i in wanted:
                    kept[i] = frame.to_image()
                if i >= sampled[-1]:
                    break
    if sorted(kept) != sampled:
        raise ValueError(f"decoding again gave {len(kept)} of the {len(sampled)} sampled frames")
    return sampled, [times[i] for i in sampled], [kept[i] for i in sampled], len(times), duration


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
