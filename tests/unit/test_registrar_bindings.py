"""The binding table: RFC 3261 section 10.3 processing with an injected clock."""

from __future__ import annotations

import pytest

from switch.registrar.bindings import Binding, BindingRow, BindingTable, RegisterOutcome, Source
from switch.registrar.contact import WILDCARD, ContactSpec, parse_contacts

AOR = "sip:alice@dialswitch.test"
NAT = Source("udp", "203.0.113.9", 40123)
T0 = 1_700_000_000.0


def contact(uri: str = "sip:alice@192.168.1.20:5060", **params: object) -> ContactSpec:
    return ContactSpec(uri, **params)  # type: ignore[arg-type]


def register(
    table: BindingTable,
    contacts: list[ContactSpec],
    expires: int | None = 3600,
    *,
    call_id: str = "call-1",
    cseq: int = 1,
    now: float = T0,
    identity: str = AOR,
    source: Source = NAT,
    connection_id: str | None = None,
) -> RegisterOutcome:
    return table.register(identity, contacts, expires, call_id, cseq, source, now, connection_id)


@pytest.fixture
def table() -> BindingTable:
    return BindingTable(min_expires=60, max_expires=3600, default_expires=1800, max_contacts=3)


def test_add_lists_the_binding_with_its_remaining_time(table: BindingTable) -> None:
    outcome = register(table, [contact()], 600)
    assert (outcome.status, outcome.reason, outcome.ok) == (200, "OK", True)
    (binding,) = outcome.bindings
    assert binding.contact_uri == "sip:alice@192.168.1.20:5060"
    assert binding.expires_at == T0 + 600
    assert (binding.call_id, binding.cseq, binding.updated_at) == ("call-1", 1, T0)
    assert outcome.added == (binding,)
    assert outcome.refreshed == outcome.removed == ()
    listed = outcome.contact_header_values(T0 + 100.5)
    assert listed == ["<sip:alice@192.168.1.20:5060>;expires=500"]
    assert table.lookup(AOR, T0 + 1) == [binding]
    assert len(table) == 1


def test_nat_source_and_connection_are_remembered(table: BindingTable) -> None:
    tcp = Source("tcp", "203.0.113.9", 51000)
    outcome = register(table, [contact()], source=tcp, connection_id="conn-7")
    (binding,) = outcome.bindings
    assert binding.source == tcp
    assert binding.connection_id == "conn-7"
    assert "192.168.1.20" in binding.contact_uri  # Request-URI only; routing uses source


def test_expiry_choice_contact_param_then_header_then_default(table: BindingTable) -> None:
    register(table, [contact("sip:a@h1", expires=120), contact("sip:a@h2")], 300)
    register(table, [contact("sip:a@h3")], None, call_id="other")
    remaining = {b.contact_uri: b.remaining(T0) for b in table.lookup(AOR, T0)}
    assert remaining == {"sip:a@h1": 120, "sip:a@h2": 300, "sip:a@h3": 1800}


def test_too_long_is_shortened_to_max(table: BindingTable) -> None:
    outcome = register(table, [contact(expires=86400)], 7200)
    assert outcome.bindings[0].remaining(T0) == 3600


def test_too_brief_is_423_with_min_expires(table: BindingTable) -> None:
    outcome = register(table, [contact()], 30)
    assert (outcome.status, outcome.reason, outcome.min_expires) == (423, "Interval Too Brief", 60)
    assert table.lookup(AOR, T0) == []
    assert register(table, [contact()], 60).ok


def test_one_brief_contact_fails_the_whole_request(table: BindingTable) -> None:
    outcome = register(table, [contact("sip:a@h1"), contact("sip:a@h2", expires=5)], 600)
    assert outcome.status == 423
    assert table.lookup(AOR, T0) == []


def test_refresh_with_higher_cseq(table: BindingTable) -> None:
    register(table, [contact()], 600)
    outcome = register(table, [contact()], 900, cseq=2, now=T0 + 500)
    (binding,) = outcome.bindings
    assert binding.expires_at == T0 + 1400
    assert binding.cseq == 2
    assert outcome.refreshed == (binding,) and outcome.added == ()
    assert table.lookup(AOR, T0 + 1000) == [binding]


@pytest.mark.parametrize("cseq", [1, 0])
def test_same_call_id_without_higher_cseq_is_out_of_order(table: BindingTable, cseq: int) -> None:
    first = register(table, [contact()], 600, cseq=1)
    outcome = register(table, [contact()], 3600, cseq=cseq, now=T0 + 10)
    assert (outcome.status, outcome.reason) == (500, "Out of order CSeq")
    assert table.lookup(AOR, T0 + 10) == list(first.bindings)


def test_new_call_id_replaces_whatever_its_cseq(table: BindingTable) -> None:
    register(table, [contact()], 600, cseq=50)
    outcome = register(table, [contact()], 600, call_id="after-reboot", cseq=1, now=T0 + 10)
    assert outcome.ok
    assert [b.call_id for b in table.lookup(AOR, T0 + 10)] == ["after-reboot"]


def test_out_of_order_check_ignores_untouched_bindings(table: BindingTable) -> None:
    register(table, [contact("sip:a@h1")], 600, cseq=5)
    outcome = register(table, [contact("sip:a@h2")], 600, cseq=2)
    assert outcome.ok
    assert len(table.lookup(AOR, T0)) == 2


def test_contact_expires_zero_removes_that_contact(table: BindingTable) -> None:
    register(table, [contact("sip:a@h1"), contact("sip:a@h2")], 600)
    outcome = register(table, [contact("sip:a@h1", expires=0)], 600, cseq=2)
    assert [b.contact_uri for b in outcome.bindings] == ["sip:a@h2"]
    assert [b.contact_uri for b in outcome.removed] == ["sip:a@h1"]


def test_expires_header_zero_removes_and_unknown_removal_is_harmless(table: BindingTable) -> None:
    register(table, [contact("sip:a@h1")], 600)
    outcome = register(table, [contact("sip:a@h1"), contact("sip:a@never")], 0, cseq=2)
    assert outcome.ok and outcome.bindings == ()
    assert table.lookup(AOR, T0) == [] and len(table) == 0


def test_matching_uses_sip_uri_equality(table: BindingTable) -> None:
    register(table, [contact("sip:alice@Phone.Example")], 600)
    outcome = register(table, [contact("SIP:alice@phone.example")], 600, cseq=2)
    assert len(outcome.bindings) == 1 and len(outcome.refreshed) == 1


def test_outbound_instance_and_reg_id_replace_a_changed_contact(table: BindingTable) -> None:
    urn = "urn:uuid:00000000-0000-1000-8000-aabbccddeeff"
    register(table, [contact("sip:a@192.168.1.20:5060", instance_id=urn, reg_id=1)], 600)
    moved = contact("sip:a@10.0.0.5:5062", instance_id=urn, reg_id=1)
    outcome = register(table, [moved], 600, call_id="new", now=T0 + 5)
    assert [b.contact_uri for b in outcome.bindings] == ["sip:a@10.0.0.5:5062"]
    second_flow = contact("sip:a@10.0.0.5:5062", instance_id=urn, reg_id=2)
    assert len(register(table, [second_flow], 600, call_id="new", cseq=2).bindings) == 2


def test_wildcard_with_expires_zero_removes_everything(table: BindingTable) -> None:
    register(table, [contact("sip:a@h1"), contact("sip:a@h2")], 600)
    register(table, [contact("sip:a@h1")], 600, identity="sip:bob@dialswitch.test")
    outcome = register(table, [WILDCARD], 0, call_id="cleanup")
    assert outcome.ok and outcome.bindings == ()
    assert len(outcome.removed) == 2
    assert table.lookup(AOR, T0) == []
    assert len(table.lookup("sip:bob@dialswitch.test", T0)) == 1


@pytest.mark.parametrize("expires", [None, 3600])
def test_wildcard_needs_expires_zero(table: BindingTable, expires: int | None) -> None:
    register(table, [contact()], 600)
    outcome = register(table, [WILDCARD], expires, call_id="cleanup")
    assert (outcome.status, outcome.reason) == (400, "Wildcard Contact requires Expires: 0")
    assert len(table.lookup(AOR, T0)) == 1


def test_wildcard_must_be_alone(table: BindingTable) -> None:
    outcome = register(table, [WILDCARD, contact()], 0)
    assert outcome.status == 400


def test_wildcard_is_out_of_order_too(table: BindingTable) -> None:
    register(table, [contact()], 600, cseq=4)
    assert register(table, [WILDCARD], 0, cseq=4).status == 500
    assert register(table, [WILDCARD], 0, cseq=5).ok


def test_too_many_contacts_is_403_and_changes_nothing(table: BindingTable) -> None:
    register(table, [contact(f"sip:a@h{i}") for i in range(3)], 600)
    outcome = register(table, [contact("sip:a@h0"), contact("sip:a@h9")], 900, cseq=2)
    assert (outcome.status, outcome.reason) == (403, "Too many contacts (at most 3)")
    assert all(b.remaining(T0) == 600 for b in table.lookup(AOR, T0))
    assert len(table.lookup(AOR, T0)) == 3


def test_refreshing_at_the_limit_is_fine_and_removal_makes_room(table: BindingTable) -> None:
    register(table, [contact(f"sip:a@h{i}") for i in range(3)], 600)
    assert register(table, [contact("sip:a@h0")], 600, cseq=2).ok
    swap = [contact("sip:a@h0", expires=0), contact("sip:a@h9")]
    assert register(table, swap, 600, cseq=3).ok
    assert {b.contact_uri for b in table.lookup(AOR, T0)} == {"sip:a@h1", "sip:a@h2", "sip:a@h9"}


def test_expired_bindings_do_not_count_against_the_limit(table: BindingTable) -> None:
    register(table, [contact(f"sip:a@h{i}") for i in range(3)], 60)
    outcome = register(table, [contact("sip:a@h9")], 600, call_id="later", now=T0 + 61)
    assert outcome.ok
    assert [b.contact_uri for b in outcome.bindings] == ["sip:a@h9"]
    assert len(outcome.removed) == 3  # the store may delete the dead rows too


def test_query_without_contacts_lists_current(table: BindingTable) -> None:
    register(table, [contact()], 600)
    outcome = register(table, [], None, call_id="query", now=T0 + 100)
    assert outcome.ok and len(outcome.bindings) == 1
    assert outcome.contact_header_values(T0 + 100)[0].endswith(";expires=500")


def test_negative_expires_header_is_400(table: BindingTable) -> None:
    assert register(table, [contact()], -1).status == 400


def test_lookup_orders_by_q_then_recency(table: BindingTable) -> None:
    register(table, [contact("sip:a@low", q=0.1)], 600)
    register(table, [contact("sip:a@none")], 600, call_id="2", now=T0 + 1)
    register(table, [contact("sip:a@high", q=1.0)], 600, call_id="3", now=T0 + 2)
    uris = [b.contact_uri for b in table.lookup(AOR, T0 + 3)]
    assert uris == ["sip:a@high", "sip:a@none", "sip:a@low"]


def test_lookup_hides_expired_and_expire_removes_them(table: BindingTable) -> None:
    register(table, [contact("sip:a@short")], 60)
    register(table, [contact("sip:a@long")], 600, call_id="2")
    assert [b.contact_uri for b in table.lookup(AOR, T0 + 60)] == ["sip:a@long"]
    assert table.expire(T0 + 59.9) == []
    assert [b.contact_uri for b in table.expire(T0 + 60)] == ["sip:a@short"]
    assert table.expire(T0 + 60) == []
    assert [b.contact_uri for b in table.expire(T0 + 1000)] == ["sip:a@long"]
    assert len(table) == 0


def test_refreshed_binding_outlives_its_first_expiry(table: BindingTable) -> None:
    register(table, [contact()], 60)
    register(table, [contact()], 600, cseq=2, now=T0 + 50)
    assert table.expire(T0 + 61) == []
    assert len(table.lookup(AOR, T0 + 61)) == 1
    assert len(table.expire(T0 + 650)) == 1


def test_unregistered_binding_is_not_expired_again(table: BindingTable) -> None:
    register(table, [contact()], 60)
    register(table, [contact()], 0, cseq=2)
    assert table.expire(T0 + 100) == []


def test_expiry_heap_stays_bounded_under_frequent_refreshes() -> None:
    table = BindingTable()
    for cseq in range(1, 3000):
        register(table, [contact()], 3600, cseq=cseq, now=T0 + cseq)
    assert len(table._heap) <= 4 * len(table) + 1025
    assert len(table.expire(T0 + 3000 + 3600)) == 1


def test_drop_connection_removes_only_its_bindings(table: BindingTable) -> None:
    register(table, [contact("sip:a@ws1")], 600, connection_id="ws-1")
    register(table, [contact("sip:a@udp")], 600, call_id="2")
    dropped = table.drop_connection("ws-1")
    assert [b.contact_uri for b in dropped] == ["sip:a@ws1"]
    assert [b.contact_uri for b in table.lookup(AOR, T0)] == ["sip:a@udp"]
    assert table.drop_connection("ws-1") == []


def test_rows_round_trip(table: BindingTable) -> None:
    (spec,) = parse_contacts(
        '<sip:a@192.168.1.20;ob>;q=0.5;+sip.instance="<urn:uuid:1>";reg-id=1;+sip.ice;x="y;z"'
    )
    register(table, [spec], 600, connection_id="tls-3")
    register(table, [contact("sip:a@other")], 600, call_id="2", identity="sip:bob@d")
    rows = table.to_rows()
    assert {row["identity"] for row in rows} == {AOR, "sip:bob@d"}
    restored = BindingTable.from_rows(rows, T0 + 1, max_contacts=3)
    assert restored.lookup(AOR, T0 + 1) == table.lookup(AOR, T0 + 1)
    assert restored.lookup("sip:bob@d", T0 + 1) == table.lookup("sip:bob@d", T0 + 1)
    (binding,) = restored.lookup(AOR, T0 + 1)
    assert binding.params == (("+sip.ice", None), ("x", '"y;z"'))
    assert len(restored.expire(T0 + 600)) == 2


def test_from_rows_skips_expired_and_keeps_the_newest_duplicate(table: BindingTable) -> None:
    register(table, [contact("sip:a@h1")], 60)
    register(table, [contact("sip:a@h2")], 600, call_id="2")
    rows = table.to_rows()
    newer: BindingRow = {**rows[1], "expires_at": T0 + 900, "updated_at": T0 + 5}
    restored = BindingTable.from_rows([newer, *rows], T0 + 100)
    (binding,) = restored.lookup(AOR, T0 + 100)
    assert (binding.contact_uri, binding.expires_at) == ("sip:a@h2", T0 + 900)


def test_bad_row_is_a_value_error(table: BindingTable) -> None:
    register(table, [contact()], 600)
    row = table.to_rows()[0]
    broken = {key: value for key, value in row.items() if key != "call_id"}
    with pytest.raises(ValueError, match="bad binding row"):
        BindingTable.from_rows([broken], T0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="bad binding row"):
        Binding.from_row(dict(row, params="no-semicolon"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings",
    [
        {"min_expires": 0},
        {"min_expires": 120, "default_expires": 60},
        {"default_expires": 7200, "max_expires": 3600},
        {"min_expires": 7200, "default_expires": 7200, "max_expires": 7200},
        {"max_contacts": 0},
    ],
)
def test_bad_settings(settings: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        BindingTable(**settings)


def test_drop_connection_forgets_an_identity_left_empty(table: BindingTable) -> None:
    register(table, [contact("sip:a@ws1")], 600, connection_id="ws-1")
    assert len(table.drop_connection("ws-1")) == 1
    assert len(table) == 0 and table.to_rows() == []


def test_a_lowered_limit_still_lets_existing_bindings_refresh(table: BindingTable) -> None:
    register(table, [contact("sip:a@h1"), contact("sip:a@h2")], 600)
    smaller = BindingTable.from_rows(table.to_rows(), T0, max_contacts=1)
    assert register(smaller, [contact("sip:a@h1")], 600, cseq=2).ok
    assert register(smaller, [contact("sip:a@h3")], 600, cseq=3).status == 403
