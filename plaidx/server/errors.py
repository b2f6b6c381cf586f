"""The server's error answer: a status, a stable type, a message naming the problem, the field at fault."""

from __future__ import annotations

from typing import Optional

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An answer other than 2xx: status, a stable ``type``, a message naming the problem, the field at fault."""

    def __init__(self, status: int, type: str, detail: str, param: Optional[str] = None):
        super().__init__(detail)
        self.status, self.type, self.detail, self.param = status, type, detail, param

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse({"detail": self.detail, "type": self.type, "param": self.param},
                            status_code=self.status, headers=headers)
