"""The site's page types: the home page and a content page with a StreamField body, as
most Wagtail sites have."""

from django.db import models
from wagtail import blocks
from wagtail.admin.panels import FieldPanel
from wagtail.documents.blocks import DocumentChooserBlock
from wagtail.fields import StreamField
from wagtail.images.blocks import ImageChooserBlock
from wagtail.models import Page


class HomePage(Page):
    intro = models.TextField(blank=True)
    content_panels = Page.content_panels + [FieldPanel("intro")]


class ContentPage(Page):
    body = StreamField(
        [
            ("heading", blocks.CharBlock()),
            ("paragraph", blocks.RichTextBlock()),
            ("image", ImageChooserBlock()),
            ("document", DocumentChooserBlock()),
        ],
        blank=True,
    )
    content_panels = Page.content_panels + [FieldPanel("body")]
