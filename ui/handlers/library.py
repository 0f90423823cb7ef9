"""The projects of the server (``--projects-dir``): open, new, duplicate, delete, download as
a zip, open from a zip, and the bundled examples, each opened as a NEW project so the one in
the tab is never replaced. Every switch saves the tab's project first (`TabSessions.open_tab`)
and answers with every component that shows a project (`views.project_updates`); the layout
chains the URL update, the preview refresh and the embedding step."""

from __future__ import annotations

from typing import Any

import gradio as gr

from owl_core.project.library import ProjectLibrary
from ui.escape import error, info, md_text
from ui.formats import bundled_projects
from ui.handlers.common import Area, AreaContext, engine_errors, file_path, tab_id, user_of
from ui.handlers.views import project_choices, project_updates
from ui.session import NEW_PROJECT_CLASSES, Session, TabSessions, safe_file_name


class LibraryHandlers(Area):
    """Project management on the page.

    Args:
        ctx: the shared `AreaContext`.
        tabs: the open tabs' sessions (a switch opens another project in the tab).
        projects: the project library on disk.
    """

    def __init__(self, ctx: AreaContext, tabs: TabSessions, projects: ProjectLibrary) -> None:
        super().__init__(ctx)
        self.tabs = tabs
        self.projects = projects

    def _switch(self, request: gr.Request, project_id: str | None,
                held: Session | None = None) -> dict:
        """Open `project_id` in the tab (`held`: the tab's session whose lock this event holds
        since the click: the switch happens there even if the page went meanwhile, so its
        reload follows it)."""
        s = self.tabs.open_tab(tab_id(request), project_id, owner=user_of(request),
                               session=held)
        with s.lock:
            return project_updates(self.c, s, self.projects)

    def _new(self, request: gr.Request, core: Any, held: Session | None = None) -> dict:
        """Open a project this request just made, as the logged-in user's."""
        user = user_of(request)
        if user is not None:
            self.projects.set_owner(core.folder.name, user)
        return self._switch(request, core.folder.name, held)

    @engine_errors
    def on_open(self, project_id: str | None, request: gr.Request) -> dict:
        """Open the project picked in the list (the current one is saved first)."""
        if not project_id:
            raise error("Pick a project in the list first.")
        if not self.projects.exists(project_id, user_of(request)):
            raise error("That project no longer exists (deleted in another tab?).")
        return self._switch(request, project_id)

    @engine_errors
    def on_new(self, request: gr.Request) -> dict:
        """A new, empty project."""
        s = self.session(request)
        with s.lock:  # a reload meanwhile waits for it
            core = self.projects.create("my-project", classes=list(NEW_PROJECT_CLASSES))
            return self._new(request, core, s)

    @engine_errors
    def on_duplicate(self, request: gr.Request) -> dict:
        """A copy of the open project (saved first), opened in the tab."""
        s = self.session(request)
        with s.lock:  # a reload meanwhile waits for it, then opens the copy
            self.tabs.saver.flush(s)
            project_id, name = s.project_id, s.core.name
            copy = self.projects.duplicate(project_id, f"{name} copy")
            info(f"Duplicated {name!r}: you are now editing the copy.")
            return self._new(request, copy, s)

    @engine_errors
    def on_delete(self, project_id: str | None, request: gr.Request) -> dict:
        """Delete the project picked in the list; deleting the open one opens the most
        recently saved other project (a new one only when there is none)."""
        if not project_id:
            return {}
        if not self.projects.exists(project_id, user_of(request)):
            raise error("That project no longer exists (deleted in another tab?).")
        s = self.session(request)
        out: dict = {}
        if project_id == s.project_id:
            other = self.tabs.most_recent_id(exclude=project_id, owner=user_of(request))
            out = (self._switch(request, other) if other is not None
                   else self.on_new.__wrapped__(self, request))
            s = self.session(request)
        if self.projects.exists(project_id):  # an untouched project went with the switch
            self.projects.delete(project_id)
        choices = project_choices(self.projects, user_of(request), s)
        with s.lock:
            out[self.c.project_list] = gr.update(choices=choices, value=s.project_id)
        info("Project deleted.")
        return out

    def on_refresh_list(self, request: gr.Request) -> dict:
        """The project list as it is on disk now (other tabs may have added projects)."""
        s = self.session(request)
        return {self.c.project_list: gr.update(
            choices=project_choices(self.projects, user_of(request), s), value=s.project_id)}

    @engine_errors
    def on_download_zip(self, request: gr.Request) -> dict:
        """The open project (project.json + images) as a zip."""
        s = self.session(request)
        self.tabs.saver.flush(s)
        with s.lock:
            project_id, stem = s.project_id, safe_file_name(s.core.name, "owl-project")
            folder = s.work_dir("project-zip")
        for old in folder.glob("*.zip"):
            old.unlink(missing_ok=True)
        path = self.projects.export_zip(project_id, folder / f"{stem}.zip")
        return {self.c.project_zip: gr.update(value=str(path), visible=True)}

    @engine_errors
    def on_open_zip(self, file: Any, request: gr.Request) -> dict:
        """A project zip (from "Download project") opened as a new project."""
        path = file_path(file)
        if not path:
            return {}
        s = self.session(request)
        with s.lock:  # a reload meanwhile waits for it
            core = self.projects.import_zip(path)
            info(f"Opened {core.name!r} from the zip as a new project.")
            return self._new(request, core, s)

    @engine_errors
    def on_load_example(self, choice: str | None, request: gr.Request) -> dict:
        """A bundled example as a NEW project (the open project is kept as it is)."""
        projects = bundled_projects()
        if not projects:
            raise error("No example project found in assets/.")
        path = projects.get(choice or "", next(iter(projects.values())))
        from owl_core.project.model import load_project

        # the tab's lock from the click to the switch: a reload of the page meanwhile (its
        # address still names the project the tab leaves) waits for the switch
        # (`TabSessions._flush_others`) and opens the example, not the project left behind
        held = self.session(request)
        with held.lock:
            name = self.projects.unique_name(load_project(path, allow_external=True).name)
            core = self.projects.import_file(path, name)  # "coins 2" next to "coins"
            out = self._new(request, core, held)
        s = self.session(request)
        with s.lock:
            out[self.c.status] = f"opened the example {md_text(repr(core.name))} as a new project"
        return out
