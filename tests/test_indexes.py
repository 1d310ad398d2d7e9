"""Each write of a delivery, a run or a recipient report maintains only the indexes a query uses.

On PostgreSQL, db_index=True on a CharField makes two indexes: a plain btree and a
varchar_pattern_ops twin that serves only LIKE 'prefix%' (startswith, contains). No query
makes one on these tables' indexed text columns (status, message_id, key), so they are indexed
in Meta.indexes instead, without the twin. A foreign key keeps its own index unless an index
or a unique constraint that is not partial leads with its column (a partial one serves only
the queries that repeat its condition).
"""

import re

import pytest
from django.db import connection

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="PostgreSQL only: SQLite makes no varchar_pattern_ops index, and its index set is not production's",
    ),
]

# Every index of each table, by its columns in order ("UPPER(address)" for an expression) and
# whether it is partial. Adding one is a decision about each write's cost: add it here too.
EXPECTED = {
    "reporting_delivery": {
        (("id",), False),  # primary key
        (("run_id",), False),  # run.deliveries, the CASCADE from a run
        (("run_id", "address"), True),  # one original email per address
        (("run_id", "destination_id"), True),  # one original per destination
        (("part_id",), False),
        (("destination_id",), False),
        (("requested_by_id",), False),
        (("status",), False),
        (("message_id",), False),  # the ESP's tracking events
        (("UPPER(address)",), False),  # the admin's search by address (address__iexact)
    },
    "reporting_reportrun": {
        (("id",), False),
        (("report_id", "created_at"), False),  # a report's runs, newest first; the PROTECT check
        (("report_id", "period_key"), True),  # one scheduled run per period
        (("created_at",), False),  # the archive's order
        (("status",), False),
        (("deadline_at",), True),
        (("requested_by_id",), False),
        (("checks_released_by_id",), False),
    },
    "reporting_runpart": {
        (("id",), False),
        (("run_id", "address"), False),  # unique
        (("run_id", "status"), False),
        (("key",), False),
        (("UPPER(recipient_email)",), False),
        (("recipient_id",), False),
        (("released_by_id",), False),
    },
}


def indexes(table: str) -> dict[str, tuple[tuple[str, ...], bool, str]]:
    """Each index of the table: its columns, whether it is partial, and its definition."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table])
        definitions = dict(cursor.fetchall())
    found = {}
    for name, constraint in constraints.items():
        if name not in definitions:  # a foreign key or a check: no index of its own
            continue
        definition = definitions[name]
        columns = tuple(constraint["columns"])
        if constraint["definition"]:  # an expression index: "... USING btree (upper((address)::text))"
            columns = tuple(f"UPPER({column})" for column in re.findall(r"upper\(\(?(\w+)", definition))
        found[name] = (columns, " WHERE " in definition, definition)
    return found


@pytest.mark.parametrize("table", sorted(EXPECTED))
def test_no_index_for_like_queries(table):
    pattern_ops = [definition for _, _, definition in indexes(table).values() if "pattern_ops" in definition]
    assert pattern_ops == [], f"{table}: an index for LIKE 'prefix%' that no query makes"


@pytest.mark.parametrize("table", sorted(EXPECTED))
def test_the_index_set(table):
    found = sorted((columns, partial) for columns, partial, _ in indexes(table).values())
    assert found == sorted(EXPECTED[table])


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("reporting_delivery", "run_id"),
        ("reporting_delivery", "message_id"),
        ("reporting_delivery", "status"),
        ("reporting_delivery", "part_id"),
        ("reporting_reportrun", "report_id"),
        ("reporting_reportrun", "status"),
        ("reporting_reportrun", "created_at"),
        ("reporting_runpart", "run_id"),
    ],
)
def test_each_lookup_has_an_index_that_leads_with_its_column(table, column):
    """Not partial: a partial index serves only the queries that repeat its condition."""
    leading = [name for name, (columns, partial, _) in indexes(table).items() if columns[0] == column and not partial]
    assert leading, f"{table}.{column}: no index leads with it"
