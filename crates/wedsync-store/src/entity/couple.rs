use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "couples")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub org_id: String,
    pub partner_a_name: String,
    pub partner_a_email: Option<String>,
    pub partner_a_phone: Option<String>,
    pub partner_a_channel: String,
    pub partner_b_name: String,
    pub partner_b_email: Option<String>,
    pub partner_b_phone: Option<String>,
    pub partner_b_channel: String,
    pub wedding_date: Date,
    pub time_zone: String,
    pub venue_name: Option<String>,
    pub venue_address: Option<String>,
    pub venue_latitude: Option<f64>,
    pub venue_longitude: Option<f64>,
    pub notes: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
