"""Account pages: register, log in, log out."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from ..urls import site_path
from . import bp
from .service import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    AccountError,
    authenticate,
    end_session,
    register_user,
    start_session,
)


class LoginForm(FlaskForm):
    """Username and password."""

    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=40)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=MAX_PASSWORD)])
    remember = BooleanField(_l("Keep me signed in"))


class RegisterForm(FlaskForm):
    """A new account."""

    username = StringField(_l("Username"), validators=[DataRequired(), Length(min=3, max=40)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(min=MIN_PASSWORD, max=MAX_PASSWORD)])
    confirm = PasswordField(
        _l("Repeat password"), validators=[DataRequired(), EqualTo("password", _l("Passwords differ."))]
    )
    email = EmailField(_l("Email (optional)"), validators=[Length(max=254)])


class LogoutForm(FlaskForm):
    """Just the CSRF token: logging out is a state change."""


def _safe_next(target: str | None) -> str:
    """Return ``target`` if it is a path on this site, else the home page (no open redirect)."""
    return site_path(target) or url_for("qa.home")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show and handle the login form."""
    if current_user.is_authenticated:
        return redirect(url_for("qa.home"))
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.username.data.strip(), form.password.data)
        if user is not None:
            start_session(user, remember=form.remember.data)
            return redirect(_safe_next(request.args.get("next")))
        flash(_("Wrong username or password."), "error")
    return render_template("auth/login.html", form=form)


@bp.route("/register", methods=["GET", "POST"])
def register():
    """Show and handle the registration form."""
    if current_user.is_authenticated:
        return redirect(url_for("qa.home"))
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            user = register_user(form.username.data.strip(), form.password.data, email=form.email.data)
        except AccountError as exc:
            flash(str(exc), "error")
        else:
            start_session(user)
            flash(_("Welcome, %(name)s!", name=user.username), "success")
            return redirect(url_for("qa.home"))
    return render_template("auth/register.html", form=form)


@bp.post("/logout")
@login_required
def logout():
    """Log out (a POST with a CSRF token; a GET could be forged by any image tag)."""
    form = LogoutForm()
    if form.validate_on_submit():
        end_session(current_user._get_current_object())
        flash(_("You are signed out."), "success")
        return redirect(url_for("auth.login"))
    flash(_("Your form expired; reload the page and try again."), "error")
    return redirect(url_for("qa.home"))
