"""`sim data ...` (placeholder until the data layer lands)."""
import typer

app = typer.Typer(help="Load, generate and inspect datasets.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List datasets in the catalog."""
    typer.echo("no datasets yet")
