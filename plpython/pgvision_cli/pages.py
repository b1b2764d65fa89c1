"""``pgvision similar --html``, ``duplicates --html`` and ``search-text --html``: one
self-contained HTML page (thumbnails inlined as data: URIs, no network, no files beside it):
the query first and its neighbours after, a row per group of near-duplicates (its
representative first), or the images whose text matched with the words read in them.

When the page has loaded it sets ``data-loaded`` on ``<body>`` to the number of pictures
the browser decoded, so a headless browser can check it (tests/test_cli.py does).
"""

import base64
import html
import io

from PIL import Image, ImageOps

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 18px; font-weight: 600; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: %(tile)dpx; background: #fff; border: 1px solid #ddd;
         border-radius: 6px; padding: 6px; }
figure.query { border: 3px solid #e67e22; }
.group { margin-bottom: 18px; }
h2 { font-size: 15px; font-weight: 600; margin: 8px 0; }
figure img, figure .missing { width: %(tile)dpx; height: %(tile)dpx; object-fit: contain;
         display: block; background: #eee; }
figure .missing { display: flex; align-items: center; justify-content: center; color: #888; }
figcaption { margin-top: 4px; line-height: 1.3; overflow-wrap: anywhere; }
.distance { color: #666; font-variant-numeric: tabular-nums; }
.words { font-family: ui-monospace, monospace; font-size: 12px; }
"""

SCRIPT = """
window.addEventListener("load", function () {
  var ok = 0;
  document.querySelectorAll("figure img").forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { ok += 1; }
  });
  document.body.setAttribute("data-loaded", String(ok));
});
"""


def thumbnail_uri(data, tile=200):
    """A data: URI of a JPEG thumbnail of image bytes, or None if they do not decode."""
    try:
        img = ImageOps.exif_transpose(Image.open(io.BytesIO(bytes(data))))
        img = img.convert("RGB")
        img.thumbnail((tile, tile))
    except Exception:  # undecodable bytes are shown as a grey tile
        return None
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def tile_html(item, tile, query=False):
    """One <figure>: item has id, name, distance (None for the query) and image bytes."""
    uri = thumbnail_uri(item["image"], tile) if item.get("image") is not None else None
    picture = (f'<img src="{uri}" alt="image {item["id"]}">' if uri
               else '<div class="missing">no picture</div>')
    lines = [item["caption"]] if item.get("caption") else [
        f"<b>{'query' if query else '#' + str(item['rank'])}</b> id {item['id']}"
        if item.get("id") is not None else "<b>query</b>"]
    if item.get("name"):
        lines.append(html.escape(str(item["name"])))
    if item.get("distance") is not None:
        lines.append(f'<span class="distance">distance {max(item["distance"], 0.0):.4f}</span>')
    return (f'<figure class="{"query" if query else "neighbour"}">{picture}'
            f'<figcaption>{"<br>".join(lines)}</figcaption></figure>')


def page(title, body, tile):
    """A whole self-contained page: ``title`` as its heading, then ``body`` (HTML)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE % {'tile': tile}}</style>"
            f"<script>{SCRIPT}</script></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>\n")


def similar_page(title, query, neighbours, tile=200):
    """The whole page as a string."""
    tiles = [tile_html(query, tile, query=True)] + [tile_html(n, tile) for n in neighbours]
    return page(title, f"<div class=\"grid\">{''.join(tiles)}</div>", tile)


def duplicates_page(title, members, tile=160):
    """A row per group of near-duplicates (``members``: dicts with group, id, name, image,
    representative, hash_distance, similarity), the representative first and outlined."""
    groups = {}
    for m in members:
        evidence = "" if m["representative"] else (
            f'<br><span class="distance">hash distance {m["hash_distance"]}' +
            (f', similarity {m["similarity"]:.3f}' if m["similarity"] is not None else "") +
            "</span>")
        caption = (f"<b>{'representative' if m['representative'] else 'copy'}</b> id {m['id']}"
                   + (f"<br>{html.escape(str(m['name']))}" if m.get("name") else ""))
        groups.setdefault(m["group"], []).append(
            tile_html(dict(m, caption=caption + evidence, name=None, distance=None), tile,
                      query=m["representative"]))
    rows = [f'<div class="group"><h2>group {g}: {len(tiles)} images</h2>'
            f'<div class="grid">{"".join(tiles)}</div></div>' for g, tiles in groups.items()]
    return page(title, "".join(rows) or "<p>No near-duplicates.</p>", tile)


def text_page(title, hits, tile=200):
    """A tile per image whose text matched (``hits``: dicts with rank, id, name, image, score
    and text), best first, each with the words read in it."""
    tiles = []
    for h in hits:
        words = "<br>".join(html.escape(line) for line in h["text"].splitlines()[:6])
        caption = (f"<b>#{h['rank']}</b> id {h['id']}" +
                   (f"<br>{html.escape(str(h['name']))}" if h.get("name") else "") +
                   f'<br><span class="distance">rank {h["score"]:.4f}</span>'
                   f'<br><span class="words">{words}</span>')
        tiles.append(tile_html(dict(h, caption=caption, name=None, distance=None), tile))
    return page(title, f"<div class=\"grid\">{''.join(tiles)}</div>" if tiles
                else "<p>No image's text matches.</p>", tile)
