"""The SQL side of the words in images: ``vision.read_text`` reads one image with the OCR
model (:mod:`pgvision.ocr`), ``vision.search_text`` ranks a table's images by the text
``vision.extract_table(source, model => 'pp_ocr_v6')`` stored in ``vision.image_text``
(Postgres full-text search: ``websearch_to_tsquery`` and ``ts_rank`` over a GIN index).

Combined with looks: the ids ``vision.search_text`` returns are the ``candidates`` of
``vision.similar``, which ranks them by their features.
"""

from . import extractors, ocr, privileges, registry, settings, spi
from .errors import (INVALID_BINARY, NULL_VALUE, UNDEFINED_OBJECT, ImageError, PgvisionError,
                     require, require_int_range, require_not_null)
from .ocr import MODEL, TEXT_SEARCH_CONFIG

FN_READ = "vision.read_text"
FN_SEARCH = "vision.search_text"
MAX_K = 10_000


def read_text(plpy, GD, image, model=MODEL):
    """Rows ``(line, text, confidence, box)`` of the text in image bytes, in reading order."""
    row = registry.lookup(plpy, GD, FN_READ, model, makes="text")
    if image is None:
        raise PgvisionError(FN_READ, 'argument "image" must not be NULL', NULL_VALUE)
    try:  # the bytes are checked before the (first, slow) model load
        array = ocr.pixels(image, settings.max_pixels(plpy, GD))
    except ImageError as err:
        raise PgvisionError(FN_READ, f'argument "image" is {err}', INVALID_BINARY) from None
    reader = extractors.get_extractor(plpy, GD, FN_READ, row)
    return [(number, line["text"], line["confidence"], line["box"])
            for number, line in enumerate(reader.read(array), start=1)]


def search_text(plpy, GD, query, source, k=10, model=MODEL):
    """Rows ``(image_id, rank, text)``: the ``k`` images of ``source`` whose text matches
    ``query`` (web search syntax: words, "quoted phrases", or, -not), best ``ts_rank``
    first. Row-level security of ``source`` and of ``vision.image_text`` holds."""
    fn = FN_SEARCH
    for argument, value in (("query", query), ("source", source), ("k", k)):
        require_not_null(fn, argument, value)
    require(fn, "query", query, query.strip() != "", "some words to search for")
    require_int_range(fn, "k", k, 1, MAX_K)
    row = registry.lookup(plpy, GD, fn, model, makes="text")
    relid = spi.relid_of(plpy, source)
    privileges.require_select(plpy, GD, fn, relid, "searching the text of its images")
    words = plpy.execute(spi.plan(plpy, GD, "SELECT pg_catalog.numnode(pg_catalog."
                                  f"websearch_to_tsquery('{TEXT_SEARCH_CONFIG}', $1)) AS n",
                                  ["text"]), [query])[0]["n"]
    require(fn, "query", query, words > 0, "at least one word (it holds only punctuation)")
    read = plpy.execute(spi.plan(plpy, GD, """
        SELECT EXISTS (SELECT 1 FROM vision.extract_jobs WHERE source = $1 AND model = $2)
            OR EXISTS (SELECT 1 FROM vision.image_text WHERE source = $1 AND model = $2) AS read
        """, ["oid", "text"]), [relid, row["name"]])[0]["read"]
    if not read:
        name = privileges.table_name(plpy, GD, relid)
        raise PgvisionError(fn, f'argument "source": the text of {name} was never read with '
                            f"model {row['name']!r}", UNDEFINED_OBJECT,
                            hint=f"CALL vision.extract_table('{name}', model => '{row['name']}') "
                            "reads it once; the change triggers and vision.maintain keep it "
                            "current.")
    found = plpy.execute(spi.plan(plpy, GD, f"""
        SELECT t.image_id, pg_catalog.ts_rank(t.document, q)::real AS rank, t.body AS text
        FROM vision.image_text t,
             pg_catalog.websearch_to_tsquery('{TEXT_SEARCH_CONFIG}', $3) AS q
        WHERE t.source = $1 AND t.model = $2 AND t.document OPERATOR(pg_catalog.@@) q
        ORDER BY rank DESC, t.image_id LIMIT $4""", ["oid", "text", "text", "int4"]),
        [relid, row["name"], query, k])
    return [(r["image_id"], r["rank"], r["text"]) for r in found]
