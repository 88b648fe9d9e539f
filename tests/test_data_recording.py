"""EpisodeRecording: a recording keeps exactly the requested episodes, each complete, whatever the
order in which the topics' messages arrive; written to a bag, they extract into exactly those
episodes with a command for every transition."""

import numpy as np
import pytest
from data_testing import DT_NS, T0, TYPES
from rclpy.serialization import serialize_message
from std_msgs.msg import String

from mbrl_ros.data.bags import BagWriter
from mbrl_ros.data.extract import dataset_from_bag
from mbrl_ros.data.recording import EpisodeRecording
from mbrl_ros.data.topics import CLOCK, COMMANDS, EVENTS, STATES, episode_event_json
from mbrl_ros.nodes.messages import command_msg, joint_state_msg

TARGET = "/mbrl/target"  # a topic without stamps


def sim_stream(n_episodes: int, steps: int, commands_from: int = 0) -> list[tuple]:
    """(topic, CDR bytes, stamp, event kind) of a lockstep sim with automatic episodes of
    ``steps`` steps (episode e starts at stamp e·(steps + 1)·dt, announced by a reset event), in
    publishing order: per state its /clock, the state, its tagged command. Commands of the first
    ``commands_from`` states are missing (the recorder's subscription was not matched yet); a
    target (no stamp) goes out at every episode start."""
    rng = np.random.default_rng(0)
    out = []
    for e in range(n_episodes):
        start = e * (steps + 1) * DT_NS
        if e:
            out.append((EVENTS, String(data=episode_event_json("reset", e, start)), start, "reset"))
            out.append((TARGET, String(data=f"target {e}"), None, None))
        for k in range(steps + 1):
            stamp = start + k * DT_NS
            q = rng.normal(size=2)
            out.append((CLOCK, String(data=str(stamp)), stamp, None))
            out.append(
                (STATES, joint_state_msg(stamp, ("a", "b"), q, -q, np.zeros(2)), stamp, None)
            )
            if len(out) > 3 * commands_from:
                out.append((COMMANDS, command_msg(rng.normal(size=2), stamp), stamp, None))
    return [(t, serialize_message(m), s, kind) for t, m, s, kind in out]


def index(stream, topic, stamp):
    return next(i for i, (t, _, s, _) in enumerate(stream) if t == topic and s == stamp)


def record(stream, rec: EpisodeRecording, bag=None) -> list[tuple]:
    """Offer the stream; write what is kept to ``bag``; returns the kept (topic, stamp)."""
    writer = BagWriter(bag) if bag else None
    kept = []
    stamps = {id(data): s for _, data, s, _ in stream}
    for i, (topic, data, stamp, kind) in enumerate(stream):
        for t, log_ns, d in rec.offer(topic, T0 + i, data, stamp, kind):
            kept.append((t, stamps[id(d)]))
            if writer and t != CLOCK and t != TARGET:
                if not writer.has_topic(t):
                    writer.add_topic(t, TYPES[t])
                writer.write(t, log_ns, d)
    if writer:
        writer.close()
    return kept


def recording(episodes: int, **kwargs) -> EpisodeRecording:
    return EpisodeRecording(
        episodes,
        states=STATES,
        required=(STATES, COMMANDS),
        streams=(STATES, COMMANDS, CLOCK),
        **kwargs,
    )


@pytest.mark.parametrize("known_length", [True, False])
def test_events_exactly_the_requested_episodes_whatever_the_arrival_order(tmp_path, known_length):
    steps, period = 20, 21 * DT_NS
    stream = sim_stream(5, steps, commands_from=3)
    # Topics arrive independently: episode 1's first state and episode 2's first state and
    # command before their reset events, episode 2's last command after episode 3's reset event,
    # and episode 3's first /clock and state before that event.
    first = stream.pop(index(stream, STATES, period))
    stream.insert(index(stream, EVENTS, period), first)
    for topic in (COMMANDS, STATES):
        early = stream.pop(index(stream, topic, 2 * period))
        stream.insert(index(stream, EVENTS, 2 * period), early)
    late = stream.pop(index(stream, COMMANDS, 2 * period + steps * DT_NS))
    stream.insert(index(stream, EVENTS, 3 * period) + 1, late)
    for topic in (STATES, CLOCK):
        early = stream.pop(index(stream, topic, 3 * period))
        stream.insert(index(stream, EVENTS, 3 * period), early)
    rec = recording(2, length_ns=steps * DT_NS if known_length else None)
    kept = record(stream, rec, tmp_path / "bag")
    assert rec.complete and rec.started == 2
    episodes = [e * period + k * DT_NS for e in (1, 2) for k in range(steps + 1)]
    stamps = sorted(s for t, s in kept if t == STATES)
    events = sorted(s for t, s in kept if t == EVENTS)
    if known_length:  # exactly the two episodes
        assert stamps == episodes and events == [period, 2 * period]
    else:  # the state that came before episode 3's event, and the event marking the boundary
        assert stamps == episodes + [3 * period] and events == [period, 2 * period, 3 * period]
    assert sorted(s for t, s in kept if t == COMMANDS) == episodes
    assert [t for t, _ in kept].count(TARGET) == 2  # episode 3's came after the end
    ex = dataset_from_bag(tmp_path / "bag")
    assert ex.dataset.n_episodes == 2 and len(ex.dataset) == 2 * steps
    assert ex.counts["no_command"] == 0 and not ex.skipped


def test_the_first_episode_waits_until_every_required_topic_has_delivered():
    stream = sim_stream(4, 10, commands_from=15)  # no command before episode 1's 4th state
    rec = recording(1)
    kept = record(stream, rec)
    assert min(s for t, s in kept if s is not None) == 2 * 11 * DT_NS  # episode 1 lacks commands
    assert rec.complete


@pytest.mark.parametrize("preroll,first", [(1000, 1), (30, 4)])
def test_events_delivered_late_begin_episodes_only_if_every_message_is_held(preroll, first):
    """The events subscription matched late on the recorder's side: the events of episodes 1-3
    arrive in a burst after episode 3's messages. Those messages are held: the episodes are
    recorded whole; if some were let go (a short pre-roll), the recording begins at the first
    event whose episode is complete."""
    period = 11 * DT_NS
    stream = sim_stream(7, 10)
    late = [stream.pop(index(stream, EVENTS, e * period)) for e in (1, 2, 3)]
    at = index(stream, EVENTS, 4 * period)
    stream[at:at] = late
    rec = recording(2, length_ns=10 * DT_NS, preroll=preroll)
    kept = record(stream, rec)
    assert sorted(s for t, s in kept if t == EVENTS) == [first * period, (first + 1) * period]
    episodes = [e * period + k * DT_NS for e in (first, first + 1) for k in range(11)]
    assert sorted(s for t, s in kept if t == STATES) == episodes
    assert sorted(s for t, s in kept if t == COMMANDS) == episodes
    assert rec.complete


def test_events_that_overtake_the_states_do_not_end_the_recording_early():
    """The recorder fell behind on the busy states and commands while the rare events got
    through: episodes 1-3's events arrive before any of their messages. The recording is not
    complete until states and commands past the last episode have come (a stream with nothing
    kept yet counts too), and the episodes are then whole."""
    period = 11 * DT_NS
    stream = sim_stream(5, 10)
    behind = [
        m for m in stream if m[2] is not None and m[0] != EVENTS and period <= m[2] < 4 * period
    ]
    stream = [m for m in stream if m not in behind]
    at = index(stream, EVENTS, 3 * period) + 1
    rec = recording(2, length_ns=10 * DT_NS)
    record(stream[:at], rec)
    assert rec.ended and not rec.complete and rec.waiting_for == [COMMANDS, STATES]
    kept = record(behind + stream[at:], rec)
    assert rec.complete
    episodes = [e * period + k * DT_NS for e in (1, 2) for k in range(11)]
    assert sorted(s for t, s in kept if t == STATES) == episodes
    assert sorted(s for t, s in kept if t == COMMANDS) == episodes


def test_stream_waits_for_the_last_messages_in_flight():
    stream = sim_stream(3, 10)
    end = 2 * 11 * DT_NS
    rec = recording(1)
    record([m for m in stream if not (m[0] == CLOCK and m[2] >= end)], rec)  # /clock stalls
    assert rec.ended and not rec.complete and rec.waiting_for == [CLOCK]


def test_service_mode_ends_episodes_on_the_first_state_at_the_length():
    """The recorder resets the sim itself; the sim runs on while the reset is in flight: the
    states after start + length are not recorded."""
    steps = 30
    stream = sim_stream(4, steps)  # resets at 31 and 62 steps stand in for the service's
    rec = recording(2, length_ns=10 * DT_NS)
    dues = []
    for i, (topic, data, stamp, kind) in enumerate(stream):
        kept = rec.offer(topic, T0 + i, data, stamp, kind)
        if topic == STATES and kept:
            dues.append((stamp, rec.between_episodes))
    period = (steps + 1) * DT_NS
    assert [s for s, _ in dues] == [e * period + k * DT_NS for e in (1, 2) for k in range(11)]
    assert [s for s, due in dues if due] == [period + 10 * DT_NS]  # episode 1 over, 2 wanted
    assert rec.ended


@pytest.mark.parametrize(
    "kwargs,match", [({"episodes": 0}, "at least 1"), ({"episodes": 1, "length_ns": 0}, "positive")]
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        recording(**kwargs)
