"""The ten NFFA-EUROPE SEM categories (Aversa et al. 2018; Modarres et al. 2017)."""

from django.db import migrations

NFFA_CATEGORIES = [
    # (name, slug, NFFA-EUROPE folder name, description)
    ("Biological", "biological", "Biological", "Cells, tissue, pollen, bacteria and other biological specimens"),
    ("Fibres", "fibres", "Fibres", "Fibres, filaments and fibre networks"),
    ("Films and coated surfaces", "films-coated-surfaces", "Films_Coated_Surface",
     "Thin films and coated surfaces, grain structure"),
    ("MEMS devices and electrodes", "mems-devices-electrodes", "MEMS_devices_and_electrodes",
     "Microfabricated devices, electrodes and circuits"),
    ("Nanowires", "nanowires", "Nanowires", "Nanowires, nanowire arrays and networks"),
    ("Particles", "particles", "Particles", "Isolated micro- and nanoparticles"),
    ("Patterned surfaces", "patterned-surfaces", "Patterned_surface", "Lithographic patterns, pillar and hole arrays"),
    ("Porous sponge", "porous-sponge", "Porous_Sponge", "Porous and sponge-like materials, foams"),
    ("Powder", "powder", "Powder", "Powders and agglomerates"),
    ("Tips", "tips", "Tips", "AFM/STM tips, needles and probes"),
]


def create_categories(apps, schema_editor):
    Category = apps.get_model("portal", "Category")
    for order, (name, slug, folder, description) in enumerate(NFFA_CATEGORIES):
        Category.objects.update_or_create(
            slug=slug, defaults={"name": name, "folder_name": folder, "description": description, "order": order}
        )


def remove_categories(apps, schema_editor):
    Category = apps.get_model("portal", "Category")
    Category.objects.filter(slug__in=[slug for _, slug, _, _ in NFFA_CATEGORIES], labels__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("portal", "0001_initial")]
    operations = [migrations.RunPython(create_categories, remove_categories)]
