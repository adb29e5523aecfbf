"""Seeds a small but realistic production site: a page tree (home, about with a
StreamField body, news with children), images and a document in media storage, an admin
and editors whose last_login is recent (the data-level RPO check reads it), and a
pre-rendered image rendition, as a site that has served traffic has.

    manage.py seed_production --admin drrun-smoke --password-env DRSITE_ADMIN_PASSWORD
"""

import io
import os
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.images import ImageFile
from django.core.management.base import BaseCommand
from django.utils import timezone
from PIL import Image as PILImage
from wagtail.documents.models import Document
from wagtail.images.models import Image
from wagtail.models import Page, Site

from home.models import ContentPage, HomePage


def png(color, size=(640, 480)):
    buf = io.BytesIO()
    PILImage.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class Command(BaseCommand):
    help = "Seed the production site the DR drill restores."

    def add_arguments(self, parser):
        parser.add_argument("--admin", default="admin")
        parser.add_argument("--password-env", default="DRSITE_ADMIN_PASSWORD")
        parser.add_argument("--last-login-hours-ago", type=float, default=3.0)
        parser.add_argument("--news", type=int, default=12)

    def handle(self, *args, **opts):
        now = timezone.now()
        recent = now - timedelta(hours=opts["last_login_hours_ago"])
        User = get_user_model()
        admin = User.objects.create_superuser(
            opts["admin"], f"{opts['admin']}@acme.example.com", os.environ[opts["password_env"]]
        )
        admin.last_login = recent - timedelta(minutes=30)
        admin.save()
        for i in range(40):
            u = User.objects.create_user(f"editor{i}", f"editor{i}@acme.example.com", None)
            u.last_login = recent - timedelta(hours=i)
            u.save()

        root = Page.get_first_root_node()
        # The page Wagtail's migrations create; a real site replaced it long ago.
        Page.objects.filter(depth=2).delete()
        home = root.add_child(
            instance=HomePage(title="Acme", slug="home", intro="Acme builds things.")
        )
        Site.objects.all().delete()
        Site.objects.create(
            hostname="www.acme.example.com",
            port=443,
            root_page=home,
            is_default_site=True,
            site_name="Acme",
        )

        images = []
        for name, color in [("team", "#3366cc"), ("office", "#cc6633"), ("logo", "#33cc66")]:
            img = Image(title=f"Acme {name}")
            img.file = ImageFile(io.BytesIO(png(color)), name=f"{name}.png")
            img.save()
            images.append(img)
        doc = Document(title="Annual report")
        doc.file = ContentFile(b"Acme annual report\n" * 200, name="annual-report.txt")
        doc.save()

        about = home.add_child(
            instance=ContentPage(
                title="About us",
                slug="about",
                body=[
                    ("heading", "Who we are"),
                    ("paragraph", "<p>Acme has made things since 1949.</p>"),
                    ("image", images[0]),
                    ("document", doc),
                ],
            )
        )
        about.save_revision().publish()
        # A site that has served traffic has renditions on disk already.
        images[0].get_rendition("width-400")
        news = home.add_child(instance=ContentPage(title="News", slug="news"))
        news.save_revision().publish()
        for i in range(opts["news"]):
            item = news.add_child(
                instance=ContentPage(
                    title=f"News item {i}",
                    slug=f"item-{i}",
                    body=[("paragraph", f"<p>Something happened, number {i}.</p>")],
                )
            )
            item.save_revision().publish()
        self.stdout.write(f"seeded: home={home.id} about={about.id} images={len(images)} docs=1")
