"""Video input: frames sampled from a file generated here (PyAV), cached, laid out as Qwen3-VL's video
inputs, sent to the transformers engine, vLLM and a remote server, and the five video benchmarks end to end on
local rows in their hub layouts."""
import base64
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import eval as ev
from benchmarks import load, video
from benchmarks import prompts as texts
from engines import video as clips
from test_benchmarks import VisionEngine
from test_eval import ScriptedEngine


def make_video(path, frames=30, fps=10, size=(64, 64)):
    """A short MPEG-4 clip whose frame i is red 8 * i (so frames can be told apart)."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            pixels = np.zeros((size[1], size[0], 3), np.uint8)
            pixels[:, :, 0] = 8 * i
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(str(tmp_path_factory.mktemp("video") / "clip.mp4"))


def test_frames_are_sampled_evenly_cached_and_bad_files_named(clip, tmp_path, monkeypatch):
    index = video.sample_frames(clip, fps=2, max_frames=8, cache=str(tmp_path))
    frames, meta = clips.load_clip(index)
    assert meta["total_frames"] == 30 and meta["fps"] == 10.0 and meta["duration"] == pytest.approx(3.0)
    assert len(frames) == 6 and meta["indices"] == [0, 6, 12, 17, 23, 29]  # 3 s x 2 fps, first to last frame
    reds = [np.asarray(f)[:, :, 0].mean() for f in frames]
    assert reds == sorted(reds) and reds[-1] - reds[0] > 150  # the right frames, in order
    assert clips.group_times(meta) == pytest.approx([0.3, 1.45, 2.6])  # Qwen's per-pair timestamps
    capped = clips.load_clip(video.sample_frames(clip, fps=2, max_frames=4, cache=str(tmp_path)))[1]
    assert capped["indices"] == [0, 10, 19, 29]  # fewer frames over the whole clip, not its start
    import av

    monkeypatch.setattr(av, "open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    assert video.sample_frames(clip, fps=2, max_frames=8, cache=str(tmp_path)) == index  # cached
    monkeypatch.undo()
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(video.VideoError, match="undecodable: .*bad.mp4"):
        video.sample_frames(str(tmp_path / "bad.mp4"), cache=str(tmp_path))
    with pytest.raises(video.VideoError, match="not found: .*nothing.mp4"):
        video.sample_frames(str(tmp_path / "nothing.mp4"), cache=str(tmp_path))


def test_video_inputs_are_qwen3_vl_s_layout_and_tokens(clip, tiny_vlm, tmp_path):
    from models import load_model
    from rollout import encode_prompt

    _, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    index = video.sample_frames(clip, fps=2, max_frames=4, cache=str(tmp_path))
    vision = clips.video_inputs(tok, [index])
    frames, _ = clips.load_clip(index)
    # upstream's layout (Qwen3VLVideoProcessor.patchify) applied to the normalised 64x64 frames (no resize
    # here)
    proc = tok.image_processor
    x = np.stack([np.asarray(f, np.float32).transpose(2, 0, 1) / 255 for f in frames])
    x = (x - np.array(proc.image_mean)[:, None, None]) / np.array(proc.image_std)[:, None, None]
    p, m, t = proc.patch_size, proc.merge_size, proc.temporal_patch_size
    v = torch.tensor(x, dtype=torch.float32)[None]
    gh, gw = 64 // p, 64 // p
    v = v.view(1, len(frames) // t, t, 3, gh // m, m, p, gw // m, m, p).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    expected = v.reshape(len(frames) // t * gh * gw, 3 * t * p * p)
    assert vision["video_grid_thw"].tolist() == [[2, gh, gw]]
    assert torch.allclose(vision["pixel_values_videos"], expected, atol=1e-5)
    ids, _enc = encode_prompt(tok, {"text": "What moves?", "videos": [index]})
    pad = tok.convert_tokens_to_ids("<|video_pad|>")
    assert ids.count(pad) == 2 * gh * gw // m ** 2
    text = tok.decode(ids)
    assert text.index("<0.5 seconds>") < text.index("<2.4 seconds>") < text.index("What moves?")


def test_engines_take_videos(clip, tiny_vlm, tmp_path, fake, monkeypatch, images):
    from engines.server import RemoteEngine
    from engines.transformers_engine import TransformersEngine
    from models import load_model
    from rollout import VLLMEngine

    model, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    index = video.sample_frames(clip, fps=2, max_frames=4, cache=str(tmp_path))
    prompts = [{"text": "What moves?", "videos": [index]}, {"text": "And here?", "images": images[:1],
                                                             "videos": [index]}, "plain"]
    groups = TransformersEngine(model.eval(), tok).generate(prompts, n=2, max_new_tokens=3)
    assert [len(g) for g in groups] == [2, 2, 2] and "pixel_values_videos" in groups[0][0].vision
    engine = VLLMEngine(tiny_vlm, tok)
    (llm,) = fake.LLM.instances
    seen = []

    def generate(requests, sampling_params, use_tqdm=True):
        seen.extend(requests)
        done = SimpleNamespace(text="ok", token_ids=[1], logprobs=None, finish_reason="stop")
        return [SimpleNamespace(prompt_token_ids=[1, 2], outputs=[done]) for _ in requests]

    llm.generate = generate
    engine.generate(prompts[:1], n=1, max_new_tokens=3)
    (frames, meta), = seen[0]["multi_modal_data"]["video"]
    assert (frames.shape == (4, 64, 64, 3) and meta["frames_indices"] == [0, 10, 19, 29]
            and meta["fps"] == 10.0)
    video_pad = tok.convert_tokens_to_ids("<|video_pad|>")  # one placeholder per video: vLLM expands it
    assert seen[0]["prompt_token_ids"].count(video_pad) == 1
    assert seen[0]["mm_processor_kwargs"] == {"do_sample_frames": False}
    sent = []

    def post(self, data, limit=None):  # the remote engine's one HTTP call
        sent.append(json.loads(data))
        return 200, json.dumps({"choices": [{"message": {"content": "\\boxed{1}"},
                                             "finish_reason": "stop"}]}).encode()

    monkeypatch.setattr(RemoteEngine, "_post", post)
    RemoteEngine("http://127.0.0.1:9", "m").generate(prompts[:1], n=1)
    part_video, part_text = sent[0]["messages"][0]["content"]
    assert part_video["type"] == "video_url" and part_text == {"type": "text", "text": "What moves?"}
    url = part_video["video_url"]["url"]
    with open(clip, "rb") as f:
        assert url.startswith("data:video/mp4;base64,") and base64.b64decode(url.split(",", 1)[1]) == f.read()


def video_rows(folder, clip):
    """name -> rows in each hub set's columns, with the clip copied where each set's rows point."""
    import shutil

    def put(rel):
        os.makedirs(os.path.dirname(os.path.join(folder, rel)) or folder, exist_ok=True)
        shutil.copy(clip, os.path.join(folder, rel))
        return rel

    put("v1.mp4"), put("perception/videos/c1.mp4"), put("abc.mp4"), put("Art_1.mp4")
    with open(os.path.join(folder, "broken.mp4"), "wb") as f:
        f.write(b"broken")
    os.makedirs(os.path.join(folder, "subtitle"), exist_ok=True)
    with open(os.path.join(folder, "subtitle", "abc.srt"), "w") as f:
        f.write("1\n00:00:00,000 --> 00:00:01,000\nhello there\n\n"
                "2\n00:00:02,000 --> 00:00:03,000\ngoodbye\n\n"
                "3\n00:00:05,000 --> 00:00:06,000\nnever shown\n")
    return {
        "mmvu": [
            {"id": "m1", "video": "v1.mp4", "question": "What colour grows?",
             "question_type": "multiple-choice",
             "choices": {"A": "blue", "B": "red", "C": "green", "D": "white", "E": ""}, "answer": "B",
             "subject": "Art"},
            {"id": "m2", "video": "v1.mp4", "question": "Which technique is shown?",
             "question_type": "open-ended", "choices": {}, "answer": "a colour ramp", "subject": "Art"},
            {"id": "m3", "video": "broken.mp4", "question": "Q?", "question_type": "open-ended",
             "choices": {}, "answer": "x", "subject": "Art"}],
        "mvbench": [
            {"video": "c1.mp4", "question": "What changes?", "candidates": ["nothing", "the colour"],
             "answer": "the colour", "config": "action_count"},
            {"video": "gone.mp4", "question": "What is missing?", "candidates": ["a", "b"], "answer": "a",
             "config": "action_count"}],
        "videomme": [
            {"video_id": "001", "videoID": "abc", "duration": "short", "domain": "d", "sub_category": "s",
             "question_id": "001-1", "task_type": "t", "question": "What does the video show?",
             "options": ["A. A red fade.", "B. A dog.", "C. Text.", "D. Nothing."], "answer": "A"}],
        "videomme_sub": [
            {"video_id": "001", "videoID": "abc", "duration": "short", "domain": "d", "sub_category": "s",
             "question_id": "001-1", "task_type": "t", "question": "Who speaks?",
             "options": ["A. Nobody.", "B. A man.", "C. A dog.", "D. A child."], "answer": "B"}],
        "videommmu": [
            {"id": "Art_1", "question": "Which option fits?", "options": ["one", "two", "three"],
             "answer": "C", "question_type": "multiple-choice", "config": "Perception"},
            {"id": "Art_1", "question": "How many seconds long is it?", "options": [], "answer": "3",
             "question_type": "open", "config": "Adaptation"}],
    }


def test_the_five_video_benchmarks_load_and_score_by_protocol(clip, tmp_path, monkeypatch):
    monkeypatch.setattr(video, "cache_root", lambda: str(tmp_path / "frames"))
    folder = tmp_path / "bench"
    folder.mkdir()
    for name, rows in video_rows(str(folder), clip).items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"fps": 2, "max_frames": 4}
    mmvu, skipped = load.load_benchmark("mmvu", str(folder), vision=True, video=cfg)
    assert skipped == {"video: undecodable": 1} and [e["answer"] for e in mmvu] == ["B", "a colour ramp"]
    assert mmvu[0]["question"].endswith("A. blue\nB. red\nC. green\nD. white") and len(mmvu[0]["videos"]) == 1
    mv, skipped = load.load_benchmark("mvbench", str(folder), vision=True, video=cfg)
    assert skipped == {"video: not found": 1} and mv[0]["answer"] == "B"
    (sub,), _ = load.load_benchmark("videomme_sub", str(folder), vision=True, video=cfg)
    # the cues at the sampled frames (0, 1, 1.9, 2.9 s): the first two, not the one at 5 s
    assert sub["question"].startswith("This video's subtitles are listed below:\nhello there\ngoodbye\n"
                                      "Who speaks?")
    # a text-only student
    assert load.load_benchmark("videomme", str(folder), vision=False, video=cfg)[1] == {"video": 1}

    answers = {"What colour grows?": "B", "Which technique is shown?": "a gradient", "What changes?": "B",
               "What does the video show?": "A", "Who speaks?": "C", "Which option fits?": "C",
               "How many seconds": "3"}
    student = VisionEngine(lambda p, k: next(f"\\boxed{{{a}}}" for q, a in answers.items() if q in p["text"]))

    def judge_reply(prompt, k):
        assert isinstance(prompt, list) and prompt[0]["role"] == "system"  # MMVU's two messages
        open_ended = prompt[0]["content"] == texts.MMVU_OPEN_ENDED_INSTRUCTION
        return '{"extracted_answer": "x", "correct": true}' if open_ended else "<think>..</think>not json"

    summary = ev.run_benchmarks(student, ["mmvu", "mvbench", "videomme", "videomme_sub", "videommmu"],
                                judge=ScriptedEngine(judge_reply), data_dir=str(folder), video=cfg,
                                log=lambda *_: None)
    assert summary["errors"] == {}
    acc = {n: r["accuracy"] for n, r in summary["benchmarks"].items()}
    assert acc == {"mmvu": 0.5, "mvbench": 1.0, "videomme": 1.0, "videomme_sub": 0.0, "videommmu": 1.0}
    assert summary["benchmarks"]["mmvu"]["judge_malformed"] == 1  # a judge failure costs that row's verdict
    assert summary["macro"]["video"] == pytest.approx(0.7) and summary["macro_missing"] == {}
    prompts = [p for call in student.calls for p in call["prompts"]]
    assert all(len(p["videos"]) == 1 and p["videos"][0].endswith("frames.json") for p in prompts)


def test_video_benchmarks_end_to_end_on_the_tiny_vlm(clip, tiny_vlm, tmp_path, monkeypatch):
    from engines.transformers_engine import TransformersEngine
    from models import load_model

    monkeypatch.setattr(video, "cache_root", lambda: str(tmp_path / "frames"))
    folder = tmp_path / "bench"
    folder.mkdir()
    for name, rows in video_rows(str(folder), clip).items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, tok = load_model(tiny_vlm, pixels=(1024, 4096))
    names = ["mmvu", "mvbench", "videomme", "videomme_sub", "videommmu"]
    summary = ev.run_benchmarks(TransformersEngine(model.eval(), tok), names, data_dir=str(folder),
                                max_new_tokens=3, video={"fps": 1, "max_frames": 4}, log=lambda *_: None)
    assert summary["errors"] == {} and set(summary["benchmarks"]) == set(names)
    assert summary["benchmarks"]["mmvu"]["skipped"] == {"video: undecodable": 1}


def encode(path, codec, frames=60, fps=10, size=(64, 48), fmt=None, options=None, gop=None, b_frames=None):
    """A clip whose frame i has its own colour (4i red, 7i green), in any container and codec PyAV writes."""
    import av

    with av.open(path, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        for i in range(frames):
            pixels = np.zeros((size[1], size[0], 3), np.uint8)
            pixels[:, :, 0], pixels[:, :, 1] = 4 * i % 256, 7 * i % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def every_frame_sampling(path, fps, max_frames):
    """The former sampling, kept here as the reference: decode every frame, keep them all, take evenly spaced
    ones. (indices, times, total frames, duration, native fps, the sampled frames' pixels)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 24.0
        frames = [(f.time if f.time is not None else i / rate, f.to_image()) for i, f in
                  enumerate(container.decode(stream))]
    duration = frames[-1][0] + 1.0 / rate
    count = min(max_frames, max(2, round(duration * fps)), len(frames))
    count -= count % 2 if count > 1 else 0
    picks = sorted({int(round(x)) for x in np.linspace(0, len(frames) - 1, max(count, 1))})  # noqa: RUF046
    return (picks, [frames[i][0] for i in picks], len(frames), duration, rate,
            [np.asarray(frames[i][1].convert("RGB")) for i in picks])


CONTAINERS = {  # name: (codec, encode's options); seekable ones and ones decoded in one pass
    "clip.mp4": ("mpeg4", {}),
    "b_frames.mp4": ("libx264", {"options": {"bf": "3", "g": "12"}}),
    "open_gop.mp4": ("libx264", {"options": {"bf": "3", "g": "25", "open-gop": "1"}, "frames": 97,
                                 "fps": 30}),
    "vp9.mkv": ("libvpx-vp9", {}),
    "vp8.webm": ("libvpx", {}),
    "b_frames.avi": ("mpeg4", {"b_frames": 2}),
    "mpeg2.ts": ("mpeg2video", {"b_frames": 2}),
    "program.mpg": ("mpeg2video", {"fmt": "mpeg", "b_frames": 2}),
    "raw.h264": ("libx264", {"fmt": "h264"}),  # no timestamps at all
    "raw.m4v": ("mpeg4", {"fmt": "m4v"}),
    "mjpeg.mov": ("mjpeg", {}),
}


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_sampled_frames_are_those_of_decoding_every_frame(name, tmp_path):
    """The frames, times, indices, frame count and duration are what decoding the whole clip gave, for every
    container (seeking where its timestamps allow, one pass keeping only the sampled frames where not)."""
    codec, kw = CONTAINERS[name]
    path = encode(str(tmp_path / name), codec, **kw)
    for fps, max_frames in [(2, 8), (2, 32), (10, 64), (0.5, 4), (100, 1000)]:
        frames, meta = clips.load_clip(video.sample_frames(path, fps, max_frames, cache=str(tmp_path / "c")))
        picks, times, total, duration, rate, pixels = every_frame_sampling(path, fps, max_frames)
        assert (meta["indices"], meta["times"], meta["total_frames"], meta["duration"], meta["fps"]) == \
            (picks, times, total, duration, rate), (fps, max_frames)
        assert len(frames) == len(pixels)
        assert all(np.array_equal(np.asarray(f), p) for f, p in zip(frames, pixels))


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """600 frames of 320 x 240 (138 MB as decoded RGB frames), a keyframe every 25."""
    return encode(str(tmp_path_factory.mktemp("long") / "long.mp4"), "mpeg4", frames=600, fps=25,
                  size=(320, 240), gop=25)


def test_a_long_clip_decodes_only_around_the_sampled_frames(long_clip, tmp_path, monkeypatch):
    """Was: every frame decoded and kept. Now each sampled frame is decoded from the keyframe before it: at
    most 8 x 25 frames of the 600 (counted on the real decoder's output)."""
    import av

    decoded, real_open = [], av.open

    class Counting:  # the real container; what its decode yields is counted
        def __init__(self, *args, **kwargs):
            self.container = real_open(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.container, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.container.__exit__(*exc)

        def decode(self, *args, **kwargs):
            for frame in self.container.decode(*args, **kwargs):
                decoded.append(frame.pts)
                yield frame

    monkeypatch.setattr(av, "open", Counting)
    frames, meta = clips.load_clip(video.sample_frames(long_clip, fps=2, max_frames=8, cache=str(tmp_path)))
    monkeypatch.undo()
    assert meta["total_frames"] == 600 and meta["indices"] == every_frame_sampling(long_clip, 2, 8)[0]
    assert len(frames) == 8 and len(decoded) <= 8 * 25


PEAK = """
import sys
sys.path.insert(0, sys.argv[1])
import av  # what sample_frames imports, loaded before the baseline
import checkpoint
from PIL import Image, PngImagePlugin
from benchmarks import video

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) * 1024

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from what the process holds now
base = status("VmRSS")
video.sample_frames(sys.argv[2], fps=2, max_frames=8, cache=sys.argv[3])
print(status("VmHWM") - base)
"""


def test_sampling_a_long_clip_takes_memory_set_by_max_frames_not_by_its_length(long_clip, tmp_path):
    """Was: 138 MB of decoded frames held for 8 kept (2.3 GB for 20 s of 720p; hundreds of GB for an hour).
    Measured as the peak resident memory of a process of its own (VmHWM: getrusage's maxrss would count its
    parent's memory at the fork), over what it held before sampling."""
    import subprocess
    import sys

    from conftest import ROOT

    res = subprocess.run([sys.executable, "-c", PEAK, ROOT, long_clip, str(tmp_path)], capture_output=True,
                         text=True, timeout=300, check=True)
    grew, everything = int(res.stdout.split()[-1]), 600 * 320 * 240 * 3
    assert grew < 40 << 20 and grew < everything / 4, (grew, everything)
