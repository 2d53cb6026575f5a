"""GitHub: a REST client, pull request approvals, and reporting where reviewers look.

Usage::

    from promotion.github.client import GitHubClient
    from promotion.github.approvals import GitHubApprovals
    from promotion.github.context import from_env

    # team membership is read with $PROMOTION_GITHUB_APP_TOKEN (GITHUB_TOKEN cannot)
    approvals = GitHubApprovals(GitHubClient.from_env(), from_env(), GitHubClient.app_from_env())

Modules: :mod:`~promotion.github.client` (``requests``, pagination, rate limits, errors),
:mod:`~promotion.github.context` (which PR), :mod:`~promotion.github.approvals` (review
rules; the local, not-for-production source), :mod:`~promotion.github.codeowners`,
:mod:`~promotion.github.report` (job summary, sticky comment, annotations).
"""
