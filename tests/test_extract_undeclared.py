"""Text that declares no encoding and is not UTF-8 is read as a browser reads it.

Case 01-encoding (tests/fixtures/encoding): four windows-1252 help articles, no declaration
anywhere; before, all four were read as windows-1250 (contraseńa, paramčtres, naďve, Conexăo).
The made-up inputs below are Central European, Cyrillic, Greek and Western texts, short ones
among them, and labelled or UTF-8 texts that must keep their reading.
"""

import shutil
from pathlib import Path

import pytest

from kbindex.extract import decode, extract
from kbindex.fetch import Fetcher
from kbindex.files import read_file
from kbindex.records import Page
from tests.server import FixtureServer, Response

CASE = Path(__file__).parent / "fixtures" / "encoding"


@pytest.mark.parametrize("name,title,words", [
    ("contrasena.txt", "Cambiar la contraseña del correo", ["configuración", "«Cuenta»"]),
    ("imprimante.txt", "Imprimante hors ligne", ["paramètres", "sélectionnez", "redémarrez"]),
    ("naive.html", "Our naïve approach", ["naïve"]),
    ("pt.html", "Conexão", ["Não", "configuração", "possível"]),
])
def test_case_files_are_read_as_windows_1252(name, title, words):
    doc = extract(read_file(CASE / name))
    assert doc.title == title
    for word in words:
        assert word in doc.text


def test_case_files_served_without_a_charset_are_read_the_same(tmp_path):
    routes = {
        "/naive": Response(body=(CASE / "naive.html").read_bytes(), headers={"Content-Type": "text/html"}),
        "/imprimante": Response(body=(CASE / "imprimante.txt").read_bytes(),
                                headers={"Content-Type": "text/plain"}),
    }
    with FixtureServer(routes) as site, Fetcher() as fetcher:
        naive = extract(fetcher.fetch(site.url("/naive")))
        imprimante = extract(fetcher.fetch(site.url("/imprimante")))
    assert naive.title == "Our naïve approach" and "naïve" in naive.text
    assert "paramètres" in imprimante.text and "redémarrez" in imprimante.text


def test_keyword_search_finds_the_accented_words(kb, tmp_path):
    folder = tmp_path / "kb"
    shutil.copytree(CASE, folder)
    summary = kb.json("index", str(folder))
    assert summary["indexed"] == 4 and summary["failed"] == 0
    naive = kb.json("query", "naïve", "--mode", "keyword")["hits"]
    assert naive and Path(naive[0]["source"]).name == "naive.html"
    settings = kb.json("query", "paramètres", "--mode", "keyword")["hits"]
    assert settings and Path(settings[0]["source"]).name == "imprimante.txt"


# Made-up inputs: (text, the encoding it is saved in). Each must come back as it was written,
# alone and inside an HTML page without any declaration.
MADE_UP = [
    ("Nastavení tiskárny: otevřete Ovládací panely a zvolte Zařízení.", "cp1250"),  # Czech, one letter tells
    ("Zmień hasło", "cp1250"),  # Polish, two words
    ("A jelszó módosításához nyissa meg a beállításokat és kattintson a Mentés gombra.", "cp1250"),
    ("Promijenite lozinku u postavkama računa i kliknite Spremi.", "cp1250"),  # Croatian
    ("Zażółć gęślą jaźń. Proszę sprawdzić ustawienia sieci.", "iso8859-2"),
    ("Перезапустите службу печати и очистите очередь заданий.", "cp1251"),
    ("Пароль", "cp1251"),  # one Russian word
    ("Відкрийте налаштування та змініть пароль.", "cp1251"),  # Ukrainian
    ("Сменете паролата си от настройките на профила.", "cp1251"),  # Bulgarian
    ("Перезапустите службу печати и очистите очередь заданий.", "koi8-r"),
    ("Αλλάξτε τον κωδικό πρόσβασης στις ρυθμίσεις.", "cp1253"),
    ("Перезапустите службу печати и очистите очередь.", "cp866"),  # DOS Cyrillic (IBM866)
    ("เปลี่ยนรหัสผ่านในการตั้งค่าบัญชีของคุณ", "cp874"),  # Thai: chardetng names it windows-874
    ("Şifrenizi değiştirmek için ayarları açın ve Kaydet'e tıklayın.", "cp1254"),
    ("Größe ändern: Die Übertragung schlägt fehl.", "cp1252"),
    ("Öppna inställningar och välj Skrivare. Åtgärda felet.", "cp1252"),
    ("Café crème", "cp1252"),
    ("The word Ïle is used here.", "cp1252"),  # ï/Ï alone: ISO-8859-4's ī to the detector
    ("Set it to 20°C ± 2°.", "cp1252"),  # ± alone: ISO-8859-2's ą to the detector
    ("It\u2019s the \u201cbest\u201d option \u2014 20 € a month.", "cp1252"),
]


@pytest.mark.parametrize("text,encoding", MADE_UP)
def test_undeclared_texts_are_read_in_their_encoding(text, encoding):
    body = text.encode(encoding)
    assert decode(body) == text
    page = f"<html><head><title>{text}</title></head><body><p>{text}</p></body></html>"
    assert text in decode(page.encode(encoding), None, html=True)


@pytest.mark.parametrize("text,encoding,content_type", [
    # A declaration is obeyed: ISO-8859-2 is not windows-1252, however Western the detector thinks.
    ("Zażółć gęślą jaźń", "iso8859-2", "text/plain; charset=ISO-8859-2"),
    ("Перезапустите службу", "koi8-r", "text/plain; charset=koi8-r"),
    ("Größe ändern", "cp1252", "text/plain; charset=iso-8859-1"),  # WHATWG: Latin-1 means windows-1252
    ("naïve café Grüße", "utf-8", None),  # valid UTF-8 needs no declaration
    ("Перезапустите службу", "utf-8", None),
])
def test_declared_and_utf8_texts_keep_their_reading(text, encoding, content_type):
    assert decode(text.encode(encoding), content_type) == text


def test_a_czech_page_over_http_is_read_as_windows_1250():
    text = "Nastavení tiskárny: otevřete Ovládací panely a zvolte Zařízení a tiskárny."
    body = f"<html><head><title>Tiskárna</title></head><body><article><h1>Tiskárna</h1><p>{text}</p>" \
           f"</article></body></html>"
    routes = {"/cz": Response(body=body.encode("cp1250"), headers={"Content-Type": "text/html"})}
    with FixtureServer(routes) as site, Fetcher() as fetcher:
        doc = extract(fetcher.fetch(site.url("/cz")))
    assert doc.title == "Tiskárna" and text in doc.text


def test_the_tld_hint_is_taken_from_the_url():
    # chardetng weighs a country's encodings higher for its TLD, as Firefox does: this short
    # Slovak sentence reads as windows-1252 (Zmeòte, úètu) from anywhere else.
    text = "Zmeňte heslo v nastaveniach účtu."
    body = f"<p>{text}</p>".encode("cp1250")
    slovak = extract(Page(source="https://pomoc.example.sk/heslo", body=body, content_type="text/html"))
    assert text in slovak.text
    elsewhere = extract(Page(source="https://help.example.com/heslo", body=body, content_type="text/html"))
    assert "Zmeòte" in elsewhere.text
