"""Account references: random, short, without look-alike characters, check-charactered, unique in the database."""
import itertools
import multiprocessing
import random

import pytest
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from app.dbsetup import init_db
from app.payments import records, references
from app.plans.service import get_plan
from tests.support.factories import make_user

LOOKALIKES = set("0O1IL")


def test_the_alphabet_has_no_look_alikes_and_a_prime_size():
    assert not LOOKALIKES & set(references.ALPHABET)
    assert len(references.ALPHABET) == len(set(references.ALPHABET)) == 31
    assert all(ch.isdigit() or ch.isupper() for ch in references.ALPHABET)


def test_codes_are_random_and_drawn_from_the_alphabet():
    codes = {references.new_code() for _ in range(2000)}
    assert len(codes) == 2000  # 31**6 possibilities: no repeats in a few thousand
    assert all(len(c) == references.CODE_LENGTH and set(c) <= set(references.ALPHABET) for c in codes)
    assert all(references.is_valid_code(c) for c in codes)
    # Every character shows up in every random position: nothing is a counter or a constant.
    for position in range(references.RANDOM_LENGTH):
        assert {c[position] for c in codes} == set(references.ALPHABET)


@pytest.mark.parametrize("prefix", ["", "L", "LI", "LIP", "LIPI", "LIPIA", "LIPIAK", "LIPIAKE", "LIPIAKEN"])
def test_a_reference_fits_darajas_twelve_characters_with_any_prefix(prefix):
    code = references.new_code()
    reference = references.reference_for_code(code, prefix)
    assert len(reference) <= 12 and reference.endswith(code)
    assert reference == prefix[:references.PREFIX_MAX] + code
    assert references.typed_code(reference) == (code, False)


def _codes(count=300, seed=21):
    rng = random.Random(seed)
    for _ in range(count):
        body = "".join(rng.choice(references.ALPHABET) for _ in range(references.RANDOM_LENGTH))
        yield body + references.check_character(body)


def test_the_check_catches_every_single_character_substitution():
    for code in _codes():
        for position, other in itertools.product(range(len(code)), references.ALPHABET):
            if other != code[position]:
                typo = code[:position] + other + code[position + 1:]
                assert not references.is_valid_code(typo), (code, typo)


def test_the_check_catches_every_transposition():
    for code in _codes():
        for i, j in itertools.combinations(range(len(code)), 2):
            if code[i] != code[j]:
                swapped = list(code)
                swapped[i], swapped[j] = swapped[j], swapped[i]
                assert not references.is_valid_code("".join(swapped)), (code, i, j)


@pytest.mark.parametrize("typed", ["{ref}", "{low}", "{code}", " {spaced} ", "LIPA-{code}", "lipia-{low_code}"])
def test_codes_as_customers_type_them(typed):
    code = references.new_code()
    ref = references.reference_for_code(code, "LIPIA")
    text = typed.format(ref=ref, low=ref.lower(), code=code, spaced=f"lipia {code[:3]} {code[3:]}".lower(),
                        low_code=code.lower())
    assert references.typed_code(text) == (code, False)


def test_a_mistyped_code_is_recognised_as_a_typo_and_a_legacy_one_is_not_a_code():
    code = references.new_code()
    wrong = code[:-1] + next(ch for ch in references.ALPHABET if ch != code[-1])
    assert references.typed_code("LIPIA" + wrong) == (None, True)
    assert references.typed_code("LIPIA1A7868") == (None, False)  # legacy hex: a 1 is never in a code
    assert references.typed_code("AB12CD") == (None, False)


# ---------------------------------------------------------------- stored references

def _create(db, user, key):
    return records.create(db, user=user, plan=get_plan(db, "basic"), phone="254700000001",
                          idempotency_key=key, reference_prefix="LIPIA")[0]


def test_new_orders_carry_a_random_reference_and_its_code(db):
    user = make_user(db)
    payment = _create(db, user, "k-ref-0001")
    assert payment["reference"] == "LIPIA" + payment["reference_code"] and len(payment["reference"]) == 12
    assert references.is_valid_code(payment["reference_code"])
    assert str(payment["_id"])[-6:].upper() not in payment["reference"]


def test_the_database_refuses_two_orders_with_one_code(db):
    assert "reference_code_unique" in db.payments.index_information()
    db.payments.insert_one({"reference": "LIPIAXXXXXXX", "reference_code": "XXXXXXX"})
    with pytest.raises(DuplicateKeyError):
        db.payments.insert_one({"reference": "LIPIAXXXXXXX", "reference_code": "XXXXXXX"})


def test_a_taken_code_is_drawn_again(db, monkeypatch):
    user, other = make_user(db), make_user(db)
    first = _create(db, user, "k-ref-first")
    draws = iter([first["reference_code"], first["reference_code"], references.new_code()])
    monkeypatch.setattr(references, "new_code", lambda: next(draws))
    second = _create(db, other, "k-ref-second")
    assert second["reference_code"] != first["reference_code"]
    assert db.payments.count_documents({"reference_code": first["reference_code"]}) == 1


def test_drawing_gives_up_after_a_bounded_number_of_collisions(db, monkeypatch):
    user, other = make_user(db), make_user(db)
    first = _create(db, user, "k-ref-first")
    calls = []
    monkeypatch.setattr(references, "new_code", lambda: calls.append(1) or first["reference_code"])
    with pytest.raises(RuntimeError, match="no free account reference"):
        _create(db, other, "k-ref-second")
    assert len(calls) == records.REFERENCE_ATTEMPTS
    assert db.payments.count_documents({"username": other.username}) == 0


def test_the_same_checkout_twice_is_still_one_order(db):
    user = make_user(db)
    first = _create(db, user, "k-ref-same")
    again, created = records.create(db, user=user, plan=get_plan(db, "basic"), phone="254700000001",
                                    idempotency_key="k-ref-same", reference_prefix="LIPIA")
    assert not created and again["_id"] == first["_id"]


def test_init_db_keeps_working_over_old_duplicate_references(db):
    """Old (hex) references were not unique; the unique index covers only the new format."""
    db.payments.insert_many([{"reference": "LIPIA1A7868", "username": f"u{i}", "idempotency_key": "k"}
                             for i in range(2)])
    init_db(db)
    assert db.payments.count_documents({"reference": "LIPIA1A7868"}) == 2


def _draw_in_child(conn):
    conn.send((references.new_code(), str(ObjectId())[-6:]))
    conn.close()


def test_forked_workers_draw_different_references():
    """gunicorn forks its workers from one master: the ObjectId counter the old references came
    from runs alike in each of them; random codes do not."""
    ObjectId()  # the master has made ids before forking, as the app does
    context, answers = multiprocessing.get_context("fork"), []
    for _ in range(2):
        mine, theirs = context.Pipe()
        child = context.Process(target=_draw_in_child, args=(theirs,))
        child.start()
        answers.append(mine.recv())
        child.join(10)
    (code_a, tail_a), (code_b, tail_b) = answers
    assert tail_a == tail_b  # what made two customers' orders share LIPIA1A7868
    assert code_a != code_b
