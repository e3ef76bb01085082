"""Rebuild the job definitions in ``manifests/`` (outputs committed). Usage: python scripts/make_job_definitions.py"""

from __future__ import annotations

from pathlib import Path

from tinytribe.formats import JobDefinition, JobGroup, JobStimulus

OUT = Path(__file__).resolve().parent.parent / "manifests"

# The design's priority list for teacher inference: ~15 h of diverse video, diversity over volume.
DIVERSE = [
    ("cneuromod", 2.0, "CNeuroMod clips: paired fMRI exists, the most relevant content"),
    ("nature_documentary", 2.0, "rich visuals, narration, ambient sound"),
    ("lecture", 2.0, "TED talks and lectures: sustained speech, gesture, slides"),
    ("drama", 2.0, "drama and film clips: dialogue, emotion, social interaction"),
    ("music_video", 1.0, "music and motion, non-speech audio"),
    ("sports", 1.0, "fast motion, crowd noise"),
    ("cooking_tutorial", 2.0, "fine motor actions, speech about objects"),
    ("ambient_nature", 1.0, "little speech: pure visual and audio scenes"),
    ("podcast_interview", 2.0, "mostly audio and faces, text-heavy"),
]

# Broadcast episode counts of Friends seasons 1-7. The Algonauts 2025 / CNeuroMod release splits each
# episode into halves named friends_sXXeYYa / ...b.
EPISODES = {1: 24, 2: 24, 3: 25, 4: 24, 5: 24, 6: 25, 7: 24}
HALF_EPISODE_S = 11 * 60.0  # nominal: a ~22-minute broadcast episode, in two halves


def main() -> None:
    diverse = JobDefinition(
        name="diverse-video-15h",
        description=("The design's ~15 h teacher-inference list, in priority order. Put your files in one folder "
                     "per group under the media folder (e.g. media/lecture/*.mp4); build with "
                     "`tinytribe manifest build-from manifests/diverse_video_15h.json --media media --out ...`."),
        job="teacher", chunk_s=150.0,
        groups=[JobGroup(name=n, priority=i + 1, target_hours=h, description=d) for i, (n, h, d) in enumerate(DIVERSE)])
    diverse.save(OUT / "diverse_video_15h.json")

    groups = []
    for season, n in EPISODES.items():
        ids = [f"friends_s{season:02d}e{e:02d}{half}" for e in range(1, n + 1) for half in "ab"]
        groups.append(JobGroup(
            name=f"s{season}", priority=season, target_hours=round(len(ids) * HALF_EPISODE_S / 3600, 2),
            description="held out for validation (the design's split)" if season == 7 else "training split",
            stimuli=[JobStimulus(id=i, expected_duration_s=HALF_EPISODE_S) for i in ids]))
    friends = JobDefinition(
        name="cneuromod-friends-s1-s7",
        description=("CNeuroMod Friends seasons 1-7 (Algonauts 2025 stimuli), ids as in that release: "
                     "friends_s01e01a.mkv, ... Expected durations are nominal (half of a ~22 min episode); "
                     "the builder reads real durations from your files and flags any more than 20 % off. "
                     "Some double episodes may be split differently in your copy: the builder lists ids it "
                     "did not find. The design counts 156 episodes; broadcast seasons 1-7 have 170."),
        job="teacher", chunk_s=150.0, groups=groups)
    friends.save(OUT / "cneuromod_friends_s1_s7.json")


if __name__ == "__main__":
    main()
