"""TransitionBuilder: pairing rules, boundaries, gaps and bad input, on hand-built message streams
whose expected transitions are written out by hand."""

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from mbrl_ros.common.msgconv import MessageError
from mbrl_ros.data.bags import typestore
from mbrl_ros.data.errors import StampOrderError
from mbrl_ros.data.topics import episode_event_json
from mbrl_ros.data.transitions import TransitionBuilder
from mbrl_ros.nodes.messages import command_msg, joint_state_msg

NAMES = ("a", "b")
DT_NS = 10_000_000  # 10 ms


def state(k: int, stamp_ns: int | None = None) -> JointState:
    """State k: position (k, -k), velocity (10k, 0.5), stamped k·dt (unless given)."""
    return joint_state_msg(
        k * DT_NS if stamp_ns is None else stamp_ns,
        NAMES,
        np.array([k, -k], float),
        np.array([10.0 * k, 0.5]),
        np.zeros(2),
    )


def torque(k: int) -> np.ndarray:
    return np.array([k + 0.25, -k - 0.75])


def event(kind: str, stamp_ns: int, episode: int = 1) -> String:
    return String(data=episode_event_json(kind, episode, stamp_ns))


def x(k: int) -> np.ndarray:
    return np.array([k, -k, 10.0 * k, 0.5])


def build(stream, **kwargs) -> tuple:
    b = TransitionBuilder(NAMES, DT_NS / 1e9, **kwargs)
    for kind, msg in stream:
        getattr(b, f"add_{kind}")(msg)
    b.finish()
    return b.take(), b.counts


def lockstep(n: int):
    """States 0..n-1, each answered by a command tagged with its stamp (sim lockstep)."""
    for k in range(n):
        yield "state", state(k)
        yield "command", command_msg(torque(k), k * DT_NS)


def test_lockstep_n_states_give_n_minus_1_exact_transitions():
    ds, counts = build(lockstep(50))
    assert len(ds) == 49
    np.testing.assert_array_equal(ds.states, np.stack([x(k) for k in range(49)]))
    np.testing.assert_array_equal(ds.actions, np.stack([torque(k) for k in range(49)]))
    np.testing.assert_array_equal(ds.next_states, np.stack([x(k) for k in range(1, 50)]))
    np.testing.assert_array_equal(ds.stamps, np.arange(49) * DT_NS)
    np.testing.assert_array_equal(ds.episodes, 0)
    assert ds.state_names == ("position/a", "position/b", "velocity/a", "velocity/b")
    assert ds.action_names == ("effort/a", "effort/b")


def test_tagged_command_arriving_after_the_next_state_is_still_paired():
    stream = []
    for k in range(10):
        stream.append(("state", state(k)))
        if k:
            stream.append(("command", command_msg(torque(k - 1), (k - 1) * DT_NS)))
    ds, counts = build(stream)
    assert len(ds) == 9 and counts["no_command"] == 0  # each command came after the next state
    np.testing.assert_array_equal(ds.actions, np.stack([torque(k) for k in range(9)]))


def test_joint_order_follows_joint_names_not_the_message():
    msg = joint_state_msg(0, ("b", "a"), np.array([2.0, 1.0]), np.array([4.0, 3.0]), np.zeros(2))
    msg2 = joint_state_msg(
        DT_NS, ("b", "a"), np.array([6.0, 5.0]), np.array([8.0, 7.0]), np.zeros(2)
    )
    ds, _ = build([("state", msg), ("command", command_msg(torque(0), 0)), ("state", msg2)])
    np.testing.assert_array_equal(ds.states[0], [1, 2, 3, 4])
    np.testing.assert_array_equal(ds.next_states[0], [5, 6, 7, 8])


def test_untagged_commands_zero_order_hold_and_nothing_before_the_first_command():
    stream = [
        ("state", state(0)),
        ("state", state(1)),  # no command yet
        ("command", command_msg(torque(1))),
        ("state", state(2)),
        ("state", state(3)),  # held: torque(1)
        ("command", command_msg(torque(7))),
        ("command", command_msg(torque(3))),
        ("state", state(4)),
    ]  # latest wins: torque(3)
    ds, counts = build(stream)
    np.testing.assert_array_equal(ds.stamps, np.array([1, 2, 3]) * DT_NS)
    np.testing.assert_array_equal(ds.actions, np.stack([torque(1), torque(1), torque(3)]))
    assert counts["no_command"] == 1


def test_tagged_command_wins_over_held_untagged_command():
    stream = [
        ("state", state(0)),
        ("command", command_msg(torque(9))),
        ("command", command_msg(torque(0), 0)),
        ("state", state(1)),
    ]
    ds, _ = build(stream)
    np.testing.assert_array_equal(ds.actions, [torque(0)])


def test_reset_cuts_the_transition_even_when_the_event_arrives_after_the_state():
    stream = []
    for k in range(6):
        stream.append(("state", state(k)))
        if k == 3:  # reset: state 3 is the first of the new episode; its event comes late
            stream.append(("event", event("reset", 3 * DT_NS)))
        stream.append(("command", command_msg(torque(k), k * DT_NS)))
    ds, counts = build(stream)
    np.testing.assert_array_equal(ds.stamps, np.array([0, 1, 3, 4]) * DT_NS)
    np.testing.assert_array_equal(ds.episodes, [0, 0, 1, 1])
    assert counts["boundary"] == 1 and counts["event_reset"] == 1


def test_held_command_from_before_a_reset_is_not_used_after_it():
    stream = [
        ("state", state(0)),
        ("command", command_msg(torque(0))),
        ("state", state(1)),
        ("event", event("reset", 2 * DT_NS)),
        ("state", state(2)),
        ("state", state(3)),
        ("command", command_msg(torque(3))),
        ("state", state(4)),
    ]
    ds, counts = build(stream)
    np.testing.assert_array_equal(ds.stamps, np.array([0, 3]) * DT_NS)
    np.testing.assert_array_equal(ds.actions, np.stack([torque(0), torque(3)]))
    np.testing.assert_array_equal(ds.episodes, [0, 1])
    assert counts["no_command"] == 1 and counts["boundary"] == 1


def test_end_and_start_events_exclude_the_states_between_episodes():
    """End at 3: state 3 is the episode's last (the transition into it counts), 4 and 5 belong
    to no episode; start at 6 begins the next."""
    stream = [
        ("event", event("start", 0, 1)),
        ("event", event("end", 3 * DT_NS, 1)),
        ("event", event("start", 6 * DT_NS, 2)),
    ] + list(lockstep(9))
    ds, counts = build(stream)
    np.testing.assert_array_equal(ds.stamps, np.array([0, 1, 2, 6, 7]) * DT_NS)
    np.testing.assert_array_equal(ds.episodes, [0, 0, 0, 1, 1])
    assert counts["outside_episode"] == 2 and counts["boundary"] == 1


def _episodes_stream(rng, episodes: int, steps: int):
    """A lockstep run with the sim's automatic episodes of ``steps`` steps (a reset advances time
    one period) and an episode manager's start/end events, in an arrival order drawn by ``rng``
    as a busy subscriber sees it: commands up to 6 states late (in order: one publisher),
    start/end events up to 3 states late, each reset event before its state."""
    timed = []  # (arrival time, order, kind, message)
    k, last_command = 0, 0.0
    for e in range(episodes):
        first = k
        if e:
            timed.append((first - 0.5, len(timed), "event", event("reset", first * DT_NS, e)))
        for _ in range(steps + 1):
            timed.append((k, len(timed), "state", state(k)))
            last_command = max(last_command, k + rng.uniform(0.1, 6))
            timed.append((last_command, len(timed), "command", command_msg(torque(k), k * DT_NS)))
            k += 1
        timed.append(
            (first + rng.uniform(0, 3), len(timed), "event", event("start", first * DT_NS, e))
        )
        timed.append(
            (k - 1 + rng.uniform(0, 3), len(timed), "event", event("end", (k - 1) * DT_NS, e))
        )
    return [(kind, msg) for _, _, kind, msg in sorted(timed, key=lambda t: t[:2])]


def test_arrival_order_of_commands_and_events_does_not_change_the_transitions():
    """Every episode gives all its `steps` transitions, numbered one episode each, whatever the
    order in which a loaded subscriber takes the three topics."""
    steps, episodes = 8, 4
    results = []
    for seed in range(20):
        ds, counts = build(_episodes_stream(np.random.default_rng(seed), episodes, steps))
        results.append(ds)
        assert len(ds) == episodes * steps, counts
    first = results[0]
    expected = [k for e in range(episodes) for k in range(e * (steps + 1), e * (steps + 1) + steps)]
    np.testing.assert_array_equal(first.stamps, np.array(expected) * DT_NS)
    np.testing.assert_array_equal(first.actions, np.stack([torque(k) for k in expected]))
    assert len(set(first.episodes.tolist())) == episodes
    for ds in results[1:]:
        for name in ("states", "actions", "next_states", "episodes", "stamps"):
            np.testing.assert_array_equal(getattr(ds, name), getattr(first, name), name)


def test_commands_caught_up_in_bulk_still_pair_with_their_states():
    """A command subscription still connecting when the first states came: DDS delivers the
    commands from the publisher's history only after 60 states. No transition is lost."""
    stream = [("state", state(k)) for k in range(60)]
    stream += [("command", command_msg(torque(k), k * DT_NS)) for k in range(60)]
    stream += [("state", state(60))]
    ds, counts = build(stream)
    assert len(ds) == 60 and counts["no_command"] == 0 and counts["late_command"] == 0
    np.testing.assert_array_equal(ds.actions, np.stack([torque(k) for k in range(60)]))


def test_a_reset_and_a_start_at_one_stamp_are_one_boundary_in_either_order():
    for late in ("reset", "start"):
        early = "start" if late == "reset" else "reset"
        stream = list(lockstep(3)) + [
            ("event", event(early, 3 * DT_NS)),
            ("state", state(3)),
            ("command", command_msg(torque(3), 3 * DT_NS)),
            ("state", state(4)),
            ("state", state(5)),
            ("event", event(late, 3 * DT_NS)),
        ]
        ds, counts = build(stream)
        np.testing.assert_array_equal(ds.stamps, np.array([0, 1, 3]) * DT_NS)
        np.testing.assert_array_equal(ds.episodes, [0, 0, 1])


def test_a_transition_waits_for_its_tagged_command_and_undecided_says_so():
    b = TransitionBuilder(NAMES, DT_NS / 1e9, command_wait=3)
    for k in range(3):
        b.add_state(state(k))
    assert b.undecided(2 * DT_NS) == 1 and b.undecided(3 * DT_NS) == 2 and not len(b.take())
    b.add_command(command_msg(torque(0), 0))
    assert b.undecided(3 * DT_NS) == 1 and len(b.take()) == 1
    for k in range(3, 6):  # no command for state 1: given up after command_wait states
        b.add_state(state(k))
    assert b.counts["no_command"] == 1 and b.undecided(2 * DT_NS) == 0


def test_a_missing_command_is_given_up_once_a_later_one_comes():
    """Commands come in order, so the command for state 3 before any for state 2 means state 2
    has none (a lockstep sim's safe hold after a timeout): decided at once, nothing waits."""
    b = TransitionBuilder(NAMES, DT_NS / 1e9)
    for k in range(5):
        b.add_state(state(k))
        if k != 2:
            b.add_command(command_msg(torque(k), k * DT_NS))
    assert b.counts["no_command"] == 1 and b.undecided(4 * DT_NS) == 0
    np.testing.assert_array_equal(b.take().stamps, np.array([0, 1]) * DT_NS)  # (3, 4): next


def test_gap_in_the_states_breaks_the_chain_and_tolerance_allows_jitter():
    stamps = [0, 10, 20, 40, 50, 61]  # ms: state at 30 missing; 61 is 10 % late
    stream = []
    for k, ms in enumerate(stamps):
        stream += [
            ("state", state(k, ms * 1_000_000)),
            ("command", command_msg(torque(k), ms * 1_000_000)),
        ]
    ds, counts = build(stream, gap_tolerance=0.15)
    np.testing.assert_array_equal(ds.stamps // 1_000_000, [0, 10, 40, 50])
    assert counts["gap"] == 1
    ds, counts = build(stream, gap_tolerance=0.05)
    assert counts["gap"] == 2 and len(ds) == 3


def test_repeated_stamp_is_dropped_and_backwards_stamp_raises_then_restarts():
    b = TransitionBuilder(NAMES, DT_NS / 1e9)
    for kind, msg in lockstep(3):
        getattr(b, f"add_{kind}")(msg)
    b.add_state(state(2))
    assert b.counts["repeated_state"] == 1
    with pytest.raises(StampOrderError, match="goes backwards"):
        b.add_state(state(1))
    b.add_command(command_msg(torque(1), DT_NS))
    b.add_state(state(2))
    b.finish()
    ds = b.take()
    np.testing.assert_array_equal(ds.stamps, np.array([0, 1, 1]) * DT_NS)
    np.testing.assert_array_equal(ds.episodes, [0, 0, 1])


def test_late_tagged_command_and_late_event_are_counted():
    b = TransitionBuilder(NAMES, DT_NS / 1e9)
    for kind, msg in lockstep(4):
        getattr(b, f"add_{kind}")(msg)
    b.add_command(command_msg(torque(0), 0))
    b.add_event(event("reset", DT_NS))
    assert b.counts["late_command"] == 1 and b.counts["late_event"] == 1


@pytest.mark.parametrize(
    "kind,msg,match",
    [
        ("state", JointState(name=["a"], position=[0.0], velocity=[0.0]), "lacks joints"),
        (
            "state",
            JointState(name=["a", "b"], position=[0.0, float("nan")], velocity=[0.0, 0.0]),
            "non-finite",
        ),
        ("command", Float64MultiArray(data=[1.0]), "expected 2"),
        ("command", Float64MultiArray(data=[1.0, float("inf")]), "non-finite"),
        ("event", String(data="not json"), "not JSON"),
        ("event", String(data='{"event": "pause", "stamp_ns": 1}'), "kind"),
        ("event", String(data='{"event": "reset", "stamp_ns": -5}'), "negative"),
    ],
)
def test_malformed_messages_raise_message_error(kind, msg, match):
    b = TransitionBuilder(NAMES, DT_NS / 1e9)
    with pytest.raises(MessageError, match=match):
        getattr(b, f"add_{kind}")(msg)


def test_bag_messages_from_rosbags_give_the_same_transitions():
    """The builder is duck-typed: rosbags' deserialised messages work like rclpy's."""
    store = typestore()
    live = list(lockstep(20))
    converted = [
        (kind, store.deserialize_cdr(serialize_message(msg), _type_of(msg))) for kind, msg in live
    ]
    assert isinstance(converted[0][1], store.types["sensor_msgs/msg/JointState"])
    a, _ = build(live)
    b, _ = build(converted)
    for name in ("states", "actions", "next_states", "episodes", "stamps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def _type_of(msg) -> str:
    return {
        JointState: "sensor_msgs/msg/JointState",
        Float64MultiArray: "std_msgs/msg/Float64MultiArray",
    }[type(msg)]


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="unique"):
        TransitionBuilder(("a", "a"), 0.01)
    with pytest.raises(ValueError, match="positive"):
        TransitionBuilder(NAMES, 0.0)
    with pytest.raises(ValueError, match="gap_tolerance"):
        TransitionBuilder(NAMES, 0.01, gap_tolerance=1.5)


def test_a_command_tagged_far_ahead_neither_waits_nor_gives_up_transitions():
    """A command tagged for a state far in the future (a fuzzed or foreign tag) is dropped; it
    does not count as 'a later command came', so the real commands, one state late, still
    make every transition."""
    b = TransitionBuilder(NAMES, DT_NS / 1e9, command_wait=10)
    b.add_state(state(0))
    b.add_command(command_msg(torque(0), 10**18))
    for k in range(1, 6):
        b.add_state(state(k))
        b.add_command(command_msg(torque(k - 1), (k - 1) * DT_NS))
    assert b.counts["future_command"] == 1 and b.counts["no_command"] == 0
    assert len(b.take()) == 4  # (0,1) .. (3,4): (4,5) waits for the state after 5
