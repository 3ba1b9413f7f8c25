"""UWS 1.1 XML documents, written with vo-models (pydantic-xml models of the UWS schema)."""

from __future__ import annotations

from urllib.parse import quote

from pydantic_xml import BaseXmlModel, element
from vo_models.uws import (
    ErrorSummary,
    Jobs,
    JobSummary,
    Parameter,
    ResultReference,
    Results,
    ShortJobDescription,
)
from vo_models.uws.models import NSMAP
from vo_models.uws.types import ErrorType, ExecutionPhase

from opus.store.jobs import EntityRecord, JobRecord, ParameterValue
from opus.uws.service import JobView


class JobParameters(BaseXmlModel, tag="parameters", ns="uws", nsmap=NSMAP):
    """The parameters of any job definition: vo-models' Parameters wants one field per name."""

    parameter: list[Parameter] = element(tag="parameter", default_factory=list)


def _serialize(model: BaseXmlModel, skip_empty: bool = False) -> bytes:
    document = model.to_xml(skip_empty=skip_empty, xml_declaration=True, encoding="UTF-8")
    assert isinstance(document, bytes)
    return document


def job_list(jobs: list[JobRecord], base: str) -> bytes:
    refs = [
        ShortJobDescription(
            job_id=job.id,
            href=f"{base}/{job.id}",
            phase=ExecutionPhase(job.phase),
            run_id=job.run_id,
            owner_id=job.owner,
            creation_time=job.creation_time,
        )
        for job in jobs
    ]
    return _serialize(Jobs(jobref=refs), skip_empty=True)


def _parameters(values: list[ParameterValue]) -> JobParameters:
    return JobParameters(
        parameter=[Parameter(id=p.name, value=p.value, by_reference=p.by_reference) for p in values]
    )


def results(entities: list[EntityRecord], job_url: str) -> Results:
    return Results(
        results=[
            ResultReference(
                id=e.name,
                href=f"{job_url}/results/{quote(e.name)}",
                size=e.size,
                mime_type=e.content_type,
            )
            for e in entities
        ]
    )


def job_document(view: JobView, job_url: str) -> bytes:
    job = view.job
    summary = JobSummary[JobParameters](
        job_id=job.id,
        run_id=job.run_id,
        owner_id=job.owner,
        phase=ExecutionPhase(job.phase),
        quote=job.quote,
        creation_time=job.creation_time,
        start_time=job.start_time,
        end_time=job.end_time,
        execution_duration=job.execution_duration,
        destruction=job.destruction,
        parameters=_parameters(view.parameters),
        results=results(view.results, job_url),
        error_summary=(
            ErrorSummary(
                message=job.error, type=ErrorType(job.error_type or "fatal"), has_detail=True
            )
            if job.error
            else None
        ),
    )
    return _serialize(summary)


def results_document(entities: list[EntityRecord], job_url: str) -> bytes:
    return _serialize(results(entities, job_url))


def parameters_document(values: list[ParameterValue]) -> bytes:
    return _serialize(_parameters(values))
