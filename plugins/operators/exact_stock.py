"""The stock flow's step before map: only stock-managed Exact items that have a Salesforce product go on.

Exact's stock feed (`sync/Inventory/StockPositions`) brings the positions that changed since the last
run. Before they are mapped, this step keeps a position only when

1. its item is stock-managed in Exact (`logistics/Items.IsStockItem`, read by ID for the changed
   positions only: one call per 20-40 of them), and
2. Salesforce has a product with the item's code (`Product2.ProductCode`): the stock flow updates
   products, it never creates one (the products flow does, with name, price and description).

The others are counted as skipped (`stock.not_stock_managed`, `stock.no_product`), not quarantined:
nothing is wrong with them. Parse-time cheap: adapters and pandas load inside `execute`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from erpsync.errors import ConfigError, FatalSourceError

__all__ = ["ExactStockItemsOperator"]


class ExactStockItemsOperator(BaseOperator):
    """Keep the stock positions of stock-managed items that have a Salesforce product.

    :param manifest: the source-check manifest (the changed stock positions).
    :param flow: the flow whose mapping names the key (`ItemId`) and the identity's source (`ItemCode`).
    """

    template_fields = ("manifest",)

    def __init__(
        self,
        *,
        manifest: Any,
        flow: str,
        exact_conn_id: str = "exact_online_default",
        salesforce_conn_id: str = "salesforce_default",
        mappings_dir: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.manifest, self.flow, self.mappings_dir = manifest, flow, mappings_dir
        self.exact_conn_id, self.salesforce_conn_id = exact_conn_id, salesforce_conn_id

    def execute(self, context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return self.run_step(context)
        except (ConfigError, FatalSourceError) as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    def run_step(self, context) -> dict[str, Any]:
        from erpsync.adapters import get_adapter
        from erpsync.chunks import ChunkWriter, Manifest, read_chunks
        from erpsync.mapping import load_flow
        from erpsync.staging import run_staging_dir

        mapping = load_flow(self.flow, self.mappings_dir)
        manifest = Manifest.from_xcom(self.manifest, where=f"{self.task_id} input")
        key = mapping.source.key
        code = mapping.fields[mapping.target.identity].source
        if code is None or (manifest.rows and not {key, code} <= set(manifest.columns)):
            raise ConfigError(
                f"the stock step needs the staged columns {key} and the identity's source; staged: "
                f"{', '.join(manifest.columns)}",
                where=self.task_id,
            )
        writer = ChunkWriter(run_staging_dir(context["ti"].dag_id, context["run_id"]), "stock_items")
        exact = get_adapter("exact_online", conn_id=self.exact_conn_id)
        salesforce = get_adapter("salesforce", conn_id=self.salesforce_conn_id)
        counts = {"not_stock_managed": 0, "no_product": 0, "passed": 0}
        try:
            for chunk in read_chunks(manifest):
                if chunk.empty:
                    continue
                ids = chunk[key].astype(str).str.lower()
                items = exact.read_by_keys("logistics/Items", "ID", ids.tolist(), columns=["IsStockItem"])
                stock_ids = {
                    str(i).lower()
                    for i, managed in zip(items["ID"], items["IsStockItem"], strict=True)
                    if str(managed).lower() == "true"  # a bool, numpy's or None from the frame
                }
                managed = ids.isin(stock_ids).to_numpy()
                counts["not_stock_managed"] += int((~managed).sum())
                chunk = chunk[managed]
                codes = chunk[code].astype(str).str.strip()
                found = salesforce.read_by_keys(
                    "Product2", "ProductCode", codes.tolist(), columns=["ProductCode"]
                )
                known = set(found["ProductCode"].dropna().astype(str).str.strip())
                placed = codes.isin(known).to_numpy()
                counts["no_product"] += int((~placed).sum())
                chunk = chunk[placed]
                counts["passed"] += len(chunk)
                writer.write(chunk)
            calls = exact.call_log.summary()
        finally:
            exact.close()
            getattr(salesforce, "close", lambda: None)()
        self.log.info("Stock positions: %s", counts)
        out = writer.close(
            columns=manifest.columns,
            stock=counts,
            # The report counts what a flow's own step before map left alone as skipped.
            orders={"filtered": counts["not_stock_managed"] + counts["no_product"]},
            calls=calls,
        )
        return out.to_xcom()
