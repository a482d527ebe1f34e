"""Key issuing, revocation and authentication rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from imagesmith.auth.keys import hash_secret, is_valid_slug, new_secret, visible_prefix
from imagesmith.auth.repository import TenancyRepository
from imagesmith.db.base import storable_text, utcnow
from imagesmith.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from imagesmith.models import ApiKey, KeyType, Organization, Project

LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key and, for project-bound keys, the tenant every query is scoped to."""

    api_key_id: str
    key_type: KeyType
    organization_id: str | None
    organization_slug: str | None
    project_id: str | None
    project_slug: str | None
    end_user_id: str | None = None  # set when an app's end user calls on the project's behalf
    # Whether the caller holds the project's key (or acts with it), as opposed to an app's end
    # user or a stranger at a live URL. Only a key holder reads the image library by `@alias`
    # in a prompt (to the others it is text: it would make another user's image, or the
    # project's newest, their reference) and names where webhooks signed with the project's
    # secret go.
    key_holder: bool = True

    @property
    def is_master(self) -> bool:
        return self.key_type is KeyType.MASTER

    @property
    def is_global_admin(self) -> bool:
        """A master key bound to no organization administers the whole server."""
        return self.is_master and self.organization_id is None

    def require_project(self) -> str:
        if self.project_id is None:
            raise Forbidden(
                "This master key is not bound to a project. Create a project key "
                "(POST /api/admin/keys with organizationSlug and projectSlug) and use it here."
            )
        return self.project_id


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str
    organization: Organization | None
    project: Project | None


class KeyService:
    def __init__(self, session: AsyncSession, developer_keys_max: int = 10):
        self.repo = TenancyRepository(session)
        self.developer_keys_max = developer_keys_max

    async def ensure_org(self, org_slug: str) -> Organization:
        check_slug("organization", org_slug)
        org = await self.repo.org_by_slug(org_slug)
        if org is None:
            org = Organization(slug=org_slug, name=org_slug)
            await self.repo.add(org)
        return org

    async def ensure_project(
        self, org_slug: str, project_slug: str
    ) -> tuple[Organization, Project]:
        check_slug("project", project_slug)
        org = await self.ensure_org(org_slug)
        project = await self.repo.project_by_slug(org.id, project_slug)
        if project is None:
            project = Project(organization_id=org.id, slug=project_slug, name=project_slug)
            await self.repo.add(project)
        return org, project

    async def issue(
        self,
        key_type: KeyType,
        *,
        org_slug: str | None,
        project_slug: str | None,
        name: str | None,
        expires_in_days: int | None,
        admin: Principal | None = None,
    ) -> IssuedKey:
        """A new key; `admin` is the master key asking (None: the operator, on the server)."""
        org: Organization | None = None
        project: Project | None = None
        if admin is not None and not admin.is_global_admin and org_slug != admin.organization_slug:
            raise Forbidden(
                f"This master key administers organization '{admin.organization_slug}' only: "
                "give that organizationSlug"
            )
        if name is not None and len(name) > 255:
            raise ValidationFailed(f"Key name is {len(name)} characters; the limit is 255")
        storable_text(name, "name")
        if key_type is KeyType.PROJECT and (org_slug is None or project_slug is None):
            raise ValidationFailed("A project key needs organizationSlug and projectSlug")
        if key_type is KeyType.DEVELOPER and org_slug is None:
            raise ValidationFailed("A developer key needs organizationSlug")
        if project_slug is not None and org_slug is None:
            raise ValidationFailed("projectSlug needs its organizationSlug")
        if org_slug is not None and project_slug is not None:
            org, project = await self.ensure_project(org_slug, project_slug)
        elif org_slug is not None:  # a master or developer key for one organization
            org = await self.ensure_org(org_slug)
        if key_type is KeyType.DEVELOPER:
            project = None  # developer keys belong to the organization, not to one project
            active = [
                k
                for k in await self.repo.keys(organization_id=org.id if org else "")
                if k.key_type is KeyType.DEVELOPER and k.revoked_at is None
            ]
            if len(active) >= self.developer_keys_max:
                raise Conflict(
                    f"This organization has {len(active)} active developer keys, the most "
                    "allowed; revoke one first",
                    code="DEVELOPER_KEY_LIMIT",
                )
        expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
        secret = new_secret()
        key = ApiKey(
            key_hash=hash_secret(secret),
            key_prefix=visible_prefix(secret),
            key_type=key_type,
            name=name,
            organization_id=org.id if org else None,
            project_id=project.id if project else None,
            expires_at=expires_at,
        )
        await self.repo.add(key)
        return IssuedKey(key=key, secret=secret, organization=org, project=project)

    async def bootstrap(self) -> IssuedKey:
        await self.repo.lock_keys()  # two first requests at once must not both see zero keys
        if await self.repo.count_keys() > 0:
            raise Forbidden(
                "Bootstrap is closed: API keys already exist. Ask an operator with a master key, "
                "or run `imagesmith keys create` on the server."
            )
        return await self.issue(
            KeyType.MASTER, org_slug=None, project_slug=None, name="bootstrap", expires_in_days=None
        )

    async def project_by_id(self, project_id: str) -> tuple[Organization, Project] | None:
        project = await self.repo.project_by_id(project_id)
        org = await self.repo.org_by_id(project.organization_id) if project else None
        return (org, project) if org is not None and project is not None else None

    async def project_keys(self, project_id: str) -> list[ApiKey]:
        return await self.repo.keys(project_id=project_id)

    async def keys(self, admin: Principal | None = None) -> list[ApiKey]:
        """Every key, or an organization-scoped master key's organization's keys."""
        if admin is not None and not admin.is_global_admin:
            return await self.repo.keys(organization_id=admin.organization_id or "")
        return await self.repo.keys()

    async def administered_project(
        self, admin: Principal | None, org_slug: str, project_slug: str
    ) -> Project:
        """The project, if `admin` administers its organization (None: the operator)."""
        organization, project = await self.project(org_slug, project_slug)
        self.check_administers(admin, organization.id)
        return project

    def check_administers(self, admin: Principal | None, organization_id: str | None) -> None:
        if admin is None or admin.is_global_admin:
            return
        if organization_id is None or organization_id != admin.organization_id:
            raise Forbidden(
                f"This master key administers organization '{admin.organization_slug}' only"
            )

    async def project(self, org_slug: str, project_slug: str) -> tuple[Organization, Project]:
        """An existing project by its slugs (public routes name projects in their path)."""
        org = await self.repo.org_by_slug(org_slug)
        project = await self.repo.project_by_slug(org.id, project_slug) if org else None
        if org is None or project is None:
            raise NotFound(f"No project {org_slug}/{project_slug}", code="PROJECT_NOT_FOUND")
        return org, project

    async def revoke(self, key_id: str, admin: Principal | None = None) -> ApiKey:
        key = await self.repo.key_by_id(key_id)
        if key is None or (
            admin is not None
            and not admin.is_global_admin
            and key.organization_id != admin.organization_id
        ):
            raise NotFound(f"API key '{key_id}' not found", code="KEY_NOT_FOUND")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        return key

    async def revoke_by_prefix_or_id(self, ident: str) -> ApiKey:
        for key in await self.repo.keys():
            if ident in (key.id, key.key_prefix):
                return await self.revoke(key.id)
        raise NotFound(f"No API key with id or prefix '{ident}'", code="KEY_NOT_FOUND")

    async def authenticate(self, secret: str | None, header: str = "X-API-Key") -> Principal:
        """Who holds this key (in a write transaction: last-used is recorded here)."""
        principal, stale = await self.identify(secret, header)
        if stale:
            await self.touch(principal.api_key_id)
        return principal

    async def touch(self, key_id: str) -> None:
        await self.repo.touch_key(key_id, utcnow())

    async def identify(
        self, secret: str | None, header: str = "X-API-Key"
    ) -> tuple[Principal, bool]:
        """Who holds this key, reading only (a read transaction will do); True when the key's
        last-used time is older than its resolution and should be recorded with `touch`."""
        if not secret:
            raise Unauthorized(f"Missing API key: send it in the {header} header")
        found = await self.repo.key_and_owners(hash_secret(secret.strip()))
        if found is None:
            raise Unauthorized("Invalid API key")
        key, org, project = found
        now = utcnow()
        if key.revoked_at is not None:
            raise Unauthorized("This API key was revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthorized(f"This API key expired at {key.expires_at.isoformat()}")
        stale = key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION
        principal = Principal(
            api_key_id=key.id,
            key_type=key.key_type,
            organization_id=org.id if org else None,
            organization_slug=org.slug if org else None,
            project_id=project.id if project else None,
            project_slug=project.slug if project else None,
        )
        return principal, stale


async def developer_of(
    keys: KeyService, secret: str | None, organization_id: str | None
) -> tuple[Principal, bool]:
    """The developer key `secret`, which must belong to `organization_id` (X-Developer-Key),
    reading only; and whether its last use should be recorded (`KeyService.identify`)."""
    if not secret:
        raise Forbidden(
            "Missing X-Developer-Key: send a developer key of this project's organization"
        )
    try:
        developer, stale = await keys.identify(secret, "X-Developer-Key")
    except Unauthorized as exc:
        raise Forbidden(f"X-Developer-Key: {exc.message}") from None
    if developer.key_type is not KeyType.DEVELOPER or developer.organization_id != organization_id:
        raise Forbidden("X-Developer-Key is not a developer key of this project's organization")
    return developer, stale


def check_slug(label: str, slug: str) -> None:
    if not is_valid_slug(slug):
        raise ValidationFailed(
            f"Invalid {label} slug '{slug}': use 1-64 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )


def key_summary(key: ApiKey, now: datetime | None = None) -> dict[str, object]:
    now = now or utcnow()
    if key.revoked_at is not None:
        state = "revoked"
    elif key.expires_at is not None and key.expires_at <= now:
        state = "expired"
    else:
        state = "active"
    return {
        "id": key.id,
        "type": key.key_type.value,
        "name": key.name,
        "keyPrefix": key.key_prefix,
        "organizationId": key.organization_id,
        "projectId": key.project_id,
        "status": state,
        "expiresAt": key.expires_at.isoformat() if key.expires_at else None,
        "lastUsedAt": key.last_used_at.isoformat() if key.last_used_at else None,
        "revokedAt": key.revoked_at.isoformat() if key.revoked_at else None,
        "createdAt": key.created_at.isoformat(),
    }
