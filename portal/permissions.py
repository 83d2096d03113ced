"""Roles and project scoping, shared by the web UI and the REST API.

member  : upload, browse and view metrics in their projects
curator : also review and correct labels in their projects
admin   : staff users; see every project, start training, promote and roll back models
"""

from __future__ import annotations

from django.db.models import QuerySet

from portal.models import Membership, Project, Sample, SEMImage


def is_admin(user) -> bool:
    return bool(user and user.is_authenticated and (user.is_staff or user.is_superuser))


def visible_projects(user) -> QuerySet[Project]:
    if not (user and user.is_authenticated):
        return Project.objects.none()
    if is_admin(user):
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def curated_projects(user) -> QuerySet[Project]:
    """Projects in which the user may review and correct labels."""
    if is_admin(user):
        return Project.objects.all()
    if not (user and user.is_authenticated):
        return Project.objects.none()
    return Project.objects.filter(memberships__user=user, memberships__role=Membership.Role.CURATOR)


def visible_samples(user) -> QuerySet[Sample]:
    if is_admin(user):
        return Sample.objects.all()
    return Sample.objects.filter(project__in=visible_projects(user))


def visible_images(user) -> QuerySet[SEMImage]:
    if is_admin(user):
        return SEMImage.objects.all()
    return SEMImage.objects.filter(sample__project__in=visible_projects(user))


def is_curator(user) -> bool:
    """Curator of at least one project (or admin): may open the review queue."""
    return is_admin(user) or curated_projects(user).exists()  # an admin may open it before any project exists


def can_curate_image(user, image: SEMImage) -> bool:
    return curated_projects(user).filter(pk=image.sample.project_id).exists()


def can_upload_to(user, sample: Sample) -> bool:
    return visible_projects(user).filter(pk=sample.project_id).exists()
