"""``pgvision map`` and ``pgvision contact-sheet``: PNG pictures of a table."""


import click

from .common import MODEL_OPTION, quoted_table, run_sql, write_png


@click.command(name="map")
@click.option("--table", "-t", required=True)
@click.option("--out", "-o", "out_path", default="map.png", show_default=True,
              type=click.Path(dir_okay=False, writable=True))
@MODEL_OPTION
@click.option("--color-by", default="cluster", show_default=True,
              help="'cluster', or a classifier whose predictions colour the points.")
@click.option("--clusters", default=8, show_default=True, type=click.IntRange(2, 1000),
              help="K of the K-means run first when the table has no clusters yet.")
@click.option("--thumbnails/--points", default=None,
              help="Images or coloured points [default: thumbnails up to 2,000 images].")
@click.option("--labels", default=None, help="Write beside each image: 'id', or a text "
              "column of the table.")
@click.option("--size", default=1000, show_default=True, type=click.IntRange(200, 4000))
@click.option("--layout", type=click.Choice(["grid", "scatter"]), default=None,
              help="'grid': each image in a cell of its own, neighbours kept; 'scatter': at "
              "its 2-D position [default: grid with thumbnails].")
@click.option("--refresh", is_flag=True, help="Recompute the 2-D map (and clusters).")
@click.pass_obj
def map_(session, table, out_path, model, color_by, clusters, thumbnails, labels, size, layout,
         refresh):
    """A PNG map of TABLE: images placed by similarity (t-SNE), coloured by cluster or label.

    Computes the 2-D map (vision.embed_2d) and the clusters (vision.cluster) when the table
    has none yet, then writes vision.plot_map's PNG to --out.
    """
    qualified = quoted_table(session, table)
    images = run_sql(session, "SELECT count(*) FROM vision.features WHERE source = "
                     "%s::regclass AND model = %s", (qualified, model))[0][0]
    if thumbnails is None:  # thumbnails read every image's bytes: not for a whole catalog
        thumbnails = images <= 2000
    have_map = run_sql(session, "SELECT count(*) FROM vision.map_2d WHERE source = %s::regclass "
                       "AND model = %s", (qualified, model))[0][0]
    if refresh or not have_map:
        session.say(f"t-SNE map of {qualified} ...")
        run_sql(session, "SELECT vision.embed_2d(%s, source => %s::regclass)", (model, qualified))
    if color_by == "cluster":
        if clusters > images:
            session.say(f"{qualified} has {images} images with features: {images} clusters")
            clusters = images
        have_clusters = run_sql(session, "SELECT count(*) FROM vision.clusters WHERE source = "
                                "%s::regclass AND model = %s", (qualified, model))[0][0]
        if refresh or not have_clusters:
            session.say(f"{clusters} clusters of {qualified} ...")
            run_sql(session, "SELECT vision.cluster(%s, k => %s, source => %s::regclass)",
                    (model, clusters, qualified))
    png = run_sql(session, "SELECT vision.plot_map(%s, color_by => %s, source => %s::regclass, "
                  "thumbnails => %s, labels => %s, size => %s, layout => %s)",
                  (model, color_by, qualified, thumbnails, labels, size, layout))[0][0]
    write_png(session, out_path, png)


@click.command(name="contact-sheet")
@click.option("--table", "-t", required=True)
@click.option("--id", "image_id", type=int, help="Query image: it and its -k neighbours.")
@click.option("--ids", help="Or any ids, comma-separated (no distances).")
@click.option("-k", default=8, show_default=True, type=click.IntRange(1, 200))
@MODEL_OPTION
@click.option("--label-column", help="A text column written under each picture.")
@click.option("--out", "-o", "out_path", default="sheet.png", show_default=True,
              type=click.Path(dir_okay=False, writable=True))
@click.pass_obj
def contact_sheet(session, table, image_id, ids, k, model, label_column, out_path):
    """vision.contact_sheet's PNG: a query image beside its neighbours, or a list of ids."""
    if (image_id is None) == (ids is None):
        raise click.UsageError("give either --id N or --ids 1,2,3")
    try:
        id_list = [int(i) for i in ids.split(",")] if ids else None
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of ids: {ids!r}", param_hint="--ids")
    png = run_sql(session, "SELECT vision.contact_sheet(image_id => %s, image_ids => %s, k => %s, "
                  "source => %s::regclass, model => %s, label_column => %s)",
                  (image_id, id_list, k, quoted_table(session, table), model, label_column))[0][0]
    write_png(session, out_path, png)
