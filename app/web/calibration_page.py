"""The catalog page's calibration section: predicted against measured per GPU kind and method, and
an admin's "Calibrate from N runs" for each GPU.

Why its own router and a fragment: the history reads every finished job, which the catalog's
edit forms do not need; the catalog page loads it with htmx (`hx-trigger="load"`), and the
same URL answers a plain request, so it can be read and tested on its own.
"""
from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.deps import AdminUser, CatalogDep, CurrentUser, SessionDep
from app.planner.calibration import (
    MIN_RUNS, TENSOR_RATIO_BOUNDS, UTILISATION_BOUNDS, history, measured_runs, propose, usable_runs,
)
from app.planner.db_catalog import DbCatalog, save_calibration
from app.planner.plan_view import gib
from app.web.templating import templates

router = APIRouter(include_in_schema=False)
templates.env.filters.setdefault("gib", gib)


@router.get("/plan/catalog/calibration", response_class=HTMLResponse)
def calibration_fragment(request: Request, session: SessionDep, user: CurrentUser, catalog: CatalogDep,
                         error: str | None = None) -> HTMLResponse:
    """Finished jobs' predicted against measured figures, grouped by device and method."""
    gpus = catalog.gpus()
    runs = measured_runs(session, gpus)
    measured_gpus = [{"gpu": g, "usable": usable_runs(g, runs), "proposal": propose(g, runs)}
                     for g in gpus if any(r.gpu == g.name for r in runs) or g.calibration is not None]
    return templates.TemplateResponse(request, "partials/calibration.html", {
        "history": history(runs), "measured_gpus": measured_gpus, "is_admin": bool(user.is_admin),
        "min_runs": MIN_RUNS, "ratio_bounds": TENSOR_RATIO_BOUNDS, "utilisation_bounds": UTILISATION_BOUNDS,
        "error": error,
    }, headers={"Vary": "HX-Request"})


def _gpu_or_404(catalog: DbCatalog, gpu_id: str):  # type: ignore[no-untyped-def]
    gpu = catalog.gpu(gpu_id)
    if gpu is None:
        raise HTTPException(status_code=404, detail="no such GPU")
    return gpu


@router.post("/plan/catalog/calibration/{gpu_id}", response_class=HTMLResponse)
def calibrate_gpu(request: Request, gpu_id: str, session: SessionDep, admin: AdminUser) -> Response:
    """Apply the bounded rule to this GPU's measured runs; admins only (422 when too few runs)."""
    catalog = DbCatalog(session)
    gpu = _gpu_or_404(catalog, gpu_id)
    proposal = propose(gpu, measured_runs(session, catalog.gpus()), by=admin.email)
    if proposal is None:
        message = (f"{gpu.name} has fewer than {MIN_RUNS} finished runs that measured tensors or "
                   f"throughput on it: nothing to calibrate")
        fragment = calibration_fragment(request, session, admin, catalog, error=message)
        fragment.status_code = 422
        return fragment
    save_calibration(session, gpu.id, proposal)
    return RedirectResponse(f"/plan/catalog?saved={quote(gpu.name + ' calibration')}", status_code=303)


@router.post("/plan/catalog/calibration/{gpu_id}/clear", response_class=HTMLResponse)
def clear_calibration(gpu_id: str, session: SessionDep, admin: AdminUser) -> Response:
    """Back to the seeded figures for this GPU; admins only."""
    gpu = _gpu_or_404(DbCatalog(session), gpu_id)
    save_calibration(session, gpu.id, None)
    return RedirectResponse(f"/plan/catalog?saved={quote(gpu.name + ' (calibration cleared)')}", status_code=303)
