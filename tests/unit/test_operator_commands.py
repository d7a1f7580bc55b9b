from app import ledger
from app.auth.service import register


def test_check_ledger_passes_on_clean_books_and_reports_drift(app, db):
    runner = app.test_cli_runner()
    with app.app_context():
        register(db, "alice", "password123", "254712345678")
    ledger.adjust(db, "alice", 50, actor="ops", reason="welcome")
    clean = runner.invoke(args=["check-ledger"])
    assert clean.exit_code == 0 and "Ledger check passed" in clean.output
    db.users.update_one({"username": "alice"}, {"$inc": {"words_remaining": 1}})
    drift = runner.invoke(args=["check-ledger"])
    assert drift.exit_code == 1 and "balance 51 but ledger says 50" in drift.output


def test_init_db_and_seed_plans_are_idempotent(app, db):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert "already present" in runner.invoke(args=["seed-plans"]).output
    assert db.plans.count_documents({}) == 2


def test_repair_ledger_command(app, db):
    with app.app_context():
        register(db, "alice", "password123", "254712345678")
    result = app.test_cli_runner().invoke(args=["repair-ledger"])
    assert result.exit_code == 0 and "Repaired 0 ledger entries" in result.output
