"""PDF and DOCX sources: text layer with page anchors, Word headings, scans skipped."""

import io

import pytest

from kbindex.errors import SkipSource
from kbindex.extract import extract
from kbindex.files import read_file, walk
from kbindex.records import Page


def make_pdf(pages: list[list[str]], info: dict[str, str] | None = None) -> bytes:
    """A small valid PDF: one Helvetica text line per string; an empty list is a page without text."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        ops = ["BT /F1 12 Tf 72 720 Td 14 TL"] + [f"({line}) Tj T*" for line in lines] + ["ET"]
        stream = "\n".join(ops).encode() if lines else b"q 1 0 0 1 0 0 cm Q"  # a scan: no text ops
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
                       f"<< /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    if info:
        objects.append(("<< " + " ".join(f"/{k} ({v})" for k, v in info.items()) + " >>").encode())
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R"
    trailer += f" /Info {len(objects)} 0 R >>" if info else " >>"
    out.write(f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def make_docx() -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.author = "Dana Reyes"
    document.core_properties.subject = "Mapping network drives with Group Policy"
    document.add_paragraph("Mapped drives", style="Title")
    document.add_paragraph("Drive letters come from a Group Policy preference item.")
    document.add_heading("Create the policy", level=1)
    document.add_paragraph("Open the Group Policy Management console.", style="List Number")
    document.add_paragraph("Edit the policy linked to the users OU.", style="List Number")
    document.add_heading("Item-level targeting", level=2)
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Letter", "Share"), ("H:", r"\\files\home")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_pdf_pages_become_sections_with_page_anchors_and_metadata(tmp_path):
    path = tmp_path / "vpn.pdf"
    path.write_bytes(make_pdf(
        [["VPN client setup", "Install the client from the portal."],
         ["Troubleshooting", "Error 809 means UDP 500 is blocked."]],
        info={"Title": "VPN guide", "Author": "IT Operations", "CreationDate": "D:20240115093000Z"},
    ))
    doc = extract(read_file(path))
    assert doc.title == "VPN guide"
    assert [(s.heading_path, s.anchor) for s in doc.sections] == [
        (("page 1",), "page=1"), (("page 2",), "page=2")]
    assert "Error 809 means UDP 500 is blocked." in doc.sections[1].text
    assert doc.metadata == {"pages": 2, "author": "IT Operations", "published": "2024-01-15"}


def test_pdf_without_a_text_layer_is_skipped():
    with pytest.raises(SkipSource) as err:
        extract(Page(source="/kb/scan.pdf", body=make_pdf([[], []])))
    assert err.value.kind == "no_text_layer"


def test_broken_pdf_is_skipped_not_fatal():
    with pytest.raises(SkipSource) as err:
        extract(Page(source="/kb/broken.pdf", body=b"%PDF-1.4\n1 0 obj << /Type /Catalog"))
    assert err.value.kind in ("unreadable", "no_text_layer")


def test_docx_headings_lists_tables_and_core_properties():
    doc = extract(Page(source="/kb/drives.docx", body=make_docx()))
    assert doc.title == "Mapped drives"
    assert [s.heading_path for s in doc.sections] == [
        (), ("Create the policy",), ("Create the policy", "Item-level targeting")]
    assert doc.sections[0].text == "Drive letters come from a Group Policy preference item."
    assert doc.sections[1].text == ("1. Open the Group Policy Management console.\n"
                                    "2. Edit the policy linked to the users OU.")
    assert doc.sections[2].text == "Letter | Share\nH: | \\\\files\\home"
    assert doc.metadata["author"] == "Dana Reyes"
    assert doc.metadata["description"] == "Mapping network drives with Group Policy"


def test_folder_walk_includes_pdf_and_docx(tmp_path):
    (tmp_path / "a.pdf").write_bytes(make_pdf([["Text"]]))
    (tmp_path / "b.docx").write_bytes(make_docx())
    (tmp_path / "c.xlsx").write_bytes(b"PK\x03\x04")
    assert [p.name for p in walk(tmp_path)] == ["a.pdf", "b.docx"]


def test_index_folder_with_pdf_docx_and_a_scan(kb, tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "vpn.pdf").write_bytes(make_pdf([["VPN client setup"], ["Error 809 means UDP 500 is blocked."]]))
    (folder / "scan.pdf").write_bytes(make_pdf([[]]))
    (folder / "drives.docx").write_bytes(make_docx())
    summary = kb.json("index", str(folder))
    assert summary["indexed"] == 2 and summary["skipped"] == 1 and summary["failed"] == 0
    assert summary["skips"][0]["kind"] == "no_text_layer"
    hit = kb.json("query", "error 809 UDP blocked", "-k", "1")["hits"][0]
    assert hit["source"].endswith("vpn.pdf") and hit["anchor"] == "page=2"
    assert hit["url"] == (folder / "vpn.pdf").resolve().as_uri() + "#page=2"
